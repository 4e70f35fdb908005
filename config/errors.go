package config

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Error is one problem in a configuration. Parse and Validate return every
// problem found, joined with errors.Join; use errors.As for the first one
// or Errors for all of them.
type Error struct {
	File   string // as given to Parse or Load; "" from Validate
	Line   int    // 1-based; 0 when the value did not come from a file
	Column int    // 1-based; 0 when unknown
	Path   string // dotted key path, e.g. "bindings.devices[2].family"; "" for the whole file
	Msg    string
}

// Error formats the problem like a compiler: "file:line:col: path: msg".
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		fmt.Fprintf(&b, "%s:%d", e.File, e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ":%d", e.Column)
		}
	case e.File != "":
		b.WriteString(e.File)
	case e.Line > 0:
		fmt.Fprintf(&b, "line %d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ", column %d", e.Column)
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors returns every *Error inside err (as joined by Parse, Load or
// Validate), in order. It returns nil if there is none.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		switch x := err.(type) {
		case nil:
		case *Error:
			out = append(out, x)
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				walk(e)
			}
		default:
			walk(errors.Unwrap(err))
		}
	}
	walk(err)
	return out
}

// joinSorted orders errors by position (errors without one last, in the
// order found) and joins them. It returns nil for an empty list.
func joinSorted(errs []error) error {
	key := func(err error) (int, int) {
		var e *Error
		if errors.As(err, &e) && e.Line > 0 {
			return e.Line, e.Column
		}
		return int(^uint(0) >> 1), 0
	}
	sort.SliceStable(errs, func(i, j int) bool {
		li, ci := key(errs[i])
		lj, cj := key(errs[j])
		return li < lj || li == lj && ci < cj
	})
	return errors.Join(errs...)
}

// quote quotes a user-supplied value for a message, shortening long ones.
func quote(s string) string {
	const max = 40
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		return strconv.Quote(string(r[:max])) + "..."
	}
	return strconv.Quote(s)
}

// orList renders ["a", "b", "c"] as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

// suggest returns the known key closest to an unknown one, or "" if none is
// close: equal after folding case and "-" to "_", or within edit distance 1
// (2 for keys longer than 4 characters).
func suggest(key string, known []string) string {
	norm := strings.ReplaceAll(strings.ToLower(key), "-", "_")
	limit := 1
	if len(norm) > 4 {
		limit = 2
	}
	best, bestDist := "", limit+1
	for _, k := range known {
		if k == norm {
			return k
		}
		if d := editDistance(norm, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b
// (Levenshtein plus transpositions), in bytes. Keys are short; inputs longer
// than 64 bytes are treated as far from everything.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 30
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
