package testenv

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// fakeT records what a helper reports; Fatalf ends the helper's goroutine
// like the real one does.
type fakeT struct {
	testing.TB
	failed string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed = format
	if len(args) > 0 {
		f.failed = strings.TrimSpace(strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " "))
	}
	panic(f)
}

func run(f *fakeT, fn func()) {
	defer func() {
		if r := recover(); r != nil && r != any(f) {
			panic(r)
		}
	}()
	fn()
}

func TestEventually(t *testing.T) {
	n := 0
	f := &fakeT{}
	run(f, func() { Eventually(f, 5*time.Second, func() bool { n++; return n == 3 }, "n == %d", 3) })
	if f.failed != "" || n != 3 {
		t.Errorf("condition met on the third poll: failed %q, polled %d times", f.failed, n)
	}

	f = &fakeT{}
	run(f, func() { Eventually(f, 30*time.Millisecond, func() bool { return false }, "the %s", "answer") })
	if !strings.Contains(f.failed, "waiting for the answer") {
		t.Errorf("never met: failure %q, want it to name what was awaited", f.failed)
	}
}

func TestEventuallyNil(t *testing.T) {
	n := 0
	f := &fakeT{}
	run(f, func() {
		EventuallyNil(f, 5*time.Second, "n", func() error {
			if n++; n < 3 {
				return errors.New("not yet")
			}
			return nil
		})
	})
	if f.failed != "" || n != 3 {
		t.Errorf("nil on the third call: failed %q, called %d times", f.failed, n)
	}

	f = &fakeT{}
	run(f, func() {
		EventuallyNil(f, 30*time.Millisecond, "counts", func() error { return errors.New("got 1, want 2") })
	})
	if !strings.Contains(f.failed, "counts") || !strings.Contains(f.failed, "got 1, want 2") {
		t.Errorf("never nil: failure %q, want what and the last error", f.failed)
	}
}
