package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// yamlLineRE splits "yaml: line 3: problem" errors of yaml.v3.
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decode parses data (one YAML document) and overlays it onto c.
func (d *decoder) decode(c *Config, data []byte) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := safeDecode(dec, &doc); err != nil {
		if !errors.Is(err, io.EOF) {
			d.syntax(err)
		}
		return // io.EOF: an empty file means all defaults
	}
	var next yaml.Node
	switch err := safeDecode(dec, &next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		d.syntax(err)
		return
	default:
		d.report(&next, "", "multiple YAML documents are not supported; remove the second \"---\" and what follows")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return
	}
	d.root(c, doc.Content[0])
}

// safeDecode guards against parser panics so that Parse never panics.
func safeDecode(dec *yaml.Decoder, n *yaml.Node) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: parser failed: %v", r)
		}
	}()
	return dec.Decode(n)
}

// syntax records a YAML syntax error. yaml.v3 reports scanner errors with a
// 1-based line, parser errors with a 0-based one, and omits the line when it
// is 0; this undoes those quirks. Reader errors (bad encoding, control
// characters) carry no line at all.
func (d *decoder) syntax(err error) {
	d.fatal = true
	msg, line := strings.TrimPrefix(err.Error(), "yaml: "), 0
	if m := yamlLineRE.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	switch {
	case isParserProblem(msg):
		line++
	case line == 0 && !strings.Contains(msg, "UTF-") && !strings.Contains(msg, "control characters") &&
		!strings.Contains(msg, "anchor") && !strings.Contains(msg, "parser failed"):
		line = 1
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Msg: "invalid YAML: " + msg})
}

// isParserProblem reports whether msg comes from yaml.v3's parser (as
// opposed to its scanner); those line numbers are 0-based.
func isParserProblem(msg string) bool {
	switch msg {
	case "did not find expected <stream-start>",
		"did not find expected <document start>",
		"did not find expected node content",
		"did not find expected key",
		"did not find expected ',' or ']'",
		"did not find expected ',' or '}'",
		"did not find expected '-' indicator",
		"found duplicate %YAML directive",
		"found incompatible YAML document",
		"found duplicate %TAG directive",
		"found undefined tag handle":
		return true
	}
	return false
}

func posOf(n *yaml.Node) position {
	return position{line: n.Line, col: n.Column}
}

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what a node is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if isNull(n) {
			return "an empty value"
		}
		return quote(n.Value)
	}
	return "an unsupported YAML construct"
}
