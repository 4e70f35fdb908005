package testenv

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"gopkg.in/yaml.v3"
)

// Manifest reads a multi-document YAML file (a Kubernetes manifest, e.g.
// deploy/kubernetes/ipng-stats.yaml or a golden rendering of the chart) and
// returns its documents of the given kind, in order, for the caller to
// Decode into a struct holding just the fields it checks. A file that
// cannot be read or parsed fails the test.
func Manifest(t testing.TB, file, kind string) []*yaml.Node {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []*yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		var head struct{ Kind string }
		if err := n.Decode(&head); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if head.Kind == kind {
			docs = append(docs, &n)
		}
	}
}

// ManifestObject decodes the first document of the given kind in file
// into out, and fails the test when there is none.
func ManifestObject(t testing.TB, file, kind string, out any) {
	t.Helper()
	docs := Manifest(t, file, kind)
	if len(docs) == 0 {
		t.Fatalf("no %s in %s", kind, file)
	}
	if err := docs[0].Decode(out); err != nil {
		t.Fatalf("%s %s: %v", file, kind, err)
	}
}
