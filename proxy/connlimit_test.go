package proxy

import (
	"net"
	"testing"
)

// TestConnLimit: at the bound the quietest connection (no byte received,
// oldest) is evicted for a new one; when every open connection has sent
// something, the new one is closed (over_limit); a close makes room.
func TestConnLimit(t *testing.T) {
	l := newConnLimit()
	l.setMax(2)
	type end struct{ srv, cli net.Conn }
	dial := func() end { s, c := net.Pipe(); return end{s, c} }
	heard := func(c net.Conn, cli net.Conn) {
		go cli.Write([]byte("x"))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	}
	closed := func(c net.Conn) bool {
		_, err := c.Write([]byte("y")) // a pipe's write fails once either end is closed
		return err != nil
	}

	a, b := dial(), dial()
	la, lb := l.admit(a.srv), l.admit(b.srv)
	if la == nil || lb == nil || l.openNow() != 2 {
		t.Fatalf("admitted %v %v, open %d", la, lb, l.openNow())
	}
	heard(lb, b.cli)
	// a is the only quiet one: evicted for c.
	c := dial()
	lc := l.admit(c.srv)
	if lc == nil || !closed(a.cli) || l.evicted.Load() != 1 || l.openNow() != 2 {
		t.Fatalf("c admitted %v, a closed %v, evicted %d, open %d", lc, closed(a.cli), l.evicted.Load(), l.openNow())
	}
	la.Close() // closing an evicted connection again changes nothing
	if l.openNow() != 2 {
		t.Fatalf("open %d after closing the evicted one again", l.openNow())
	}
	heard(lc, c.cli)
	// Nothing quiet: d is closed.
	d := dial()
	if ld := l.admit(d.srv); ld != nil || !closed(d.cli) || l.overLimit.Load() != 1 {
		t.Fatalf("d admitted %v, closed %v, over_limit %d", ld, closed(d.cli), l.overLimit.Load())
	}
	// A close makes room.
	lb.Close()
	e := dial()
	if le := l.admit(e.srv); le == nil || l.openNow() != 2 || l.evicted.Load() != 1 {
		t.Fatalf("e admitted %v, open %d, evicted %d", le, l.openNow(), l.evicted.Load())
	}
}
