package testenv

import (
	"fmt"
	"testing"
	"time"
)

// pollInterval is how often Eventually re-checks its condition: short
// enough not to slow a test down, long enough not to busy a loaded machine.
const pollInterval = 10 * time.Millisecond

// Eventually polls cond until it holds and fails the test (Fatalf) when it
// still does not after timeout. The message, what the test waited for, is
// format and args. It returns how long it took. Tests wait for the
// observable condition with Eventually instead of sleeping: the deadline is
// only an upper bound, so make it generous (a busy 2-vCPU machine).
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(pollInterval)
	}
	return time.Since(start)
}

// EventuallyNil polls fn until it returns nil and fails the test (Fatalf)
// with what and fn's last error when it has not after timeout. The error
// says what was last seen, e.g. "counts = ..., want ...".
func EventuallyNil(t testing.TB, timeout time.Duration, what string, fn func() error) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for {
		err := fn()
		if err == nil {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(pollInterval)
	}
}
