package proxy

import (
	"context"
	"net"
	"testing"
	"time"
)

// acceptor hands over the server side of each connection to a loopback
// port, kept open until the test ends.
func acceptor(t *testing.T) (string, <-chan net.Conn) {
	ch := make(chan net.Conn, 16)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	return rawBackend(t, func(c net.Conn) {
		ch <- c
		<-done
	}), ch
}

// TestUpstreamConnsIdle: an idle connection is reused while it is younger
// than the keep-alive timeout and the server has not closed it; expired
// ones and ones the server closed are closed and replaced by a new one.
func TestUpstreamConnsIdle(t *testing.T) {
	addr, accepted := acceptor(t)
	u := &upstreamConns{addr: addr, dialer: &net.Dialer{}, keepalive: time.Minute}
	ctx := context.Background()
	// get returns a connection and, when it is new, its server side.
	get := func() (*upConn, net.Conn) {
		t.Helper()
		uc, reused, err := u.get(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		if reused {
			return uc, nil
		}
		return uc, <-accepted
	}

	a, _ := get()
	u.put(a)
	if b, srv := get(); srv != nil || b != a {
		t.Fatalf("idle connection not reused")
	}

	// Expired: the newest is older than keepalive, so all are.
	b, _ := get()
	u.put(a)
	u.put(b)
	a.idleSince = time.Now().Add(-2 * time.Minute)
	b.idleSince = time.Now().Add(-2 * time.Minute)
	c, srv := get()
	if srv == nil {
		t.Fatal("expired connection reused")
	}
	if len(u.idle) != 0 {
		t.Fatalf("%d idle after expiry, want 0", len(u.idle))
	}

	// closeExpired keeps the young ones.
	young, _ := get()
	u.put(c)
	u.put(young)
	c.idleSince = time.Now().Add(-2 * time.Minute)
	u.closeExpired(time.Now())
	if len(u.idle) != 1 || u.idle[0] != young {
		t.Fatalf("after closeExpired: %d idle, want the young one", len(u.idle))
	}

	// Closed by the server while idle (its FIN has arrived): not reused.
	u.closeIdle()
	d, srv := get()
	u.put(d)
	d.idleSince = time.Now().Add(-time.Second) // long enough to be checked
	srv.Close()
	deadline := time.Now().Add(5 * time.Second)
	for d.idleOK() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // the FIN is on its way over loopback
	}
	if e, srv := get(); srv == nil || e == d {
		t.Fatal("connection closed by the server was reused")
	}
}

// BenchmarkIdleOK: the check before an idle connection is reused (one
// non-blocking MSG_PEEK recvfrom).
func BenchmarkIdleOK(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	uc := &upConn{c: c}
	for b.Loop() {
		if !uc.idleOK() {
			b.Fatal("idle connection reported closed")
		}
	}
}
