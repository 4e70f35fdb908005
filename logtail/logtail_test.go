package logtail

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// receiver is a local UDP target collecting datagrams.
func receiver(t *testing.T) (addr string, got func() []string) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	var mu sync.Mutex
	var dgrams []string
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			dgrams = append(dgrams, string(buf[:n]))
			mu.Unlock()
		}
	}()
	return pc.LocalAddr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), dgrams...)
	}
}

func TestOneLinePerDatagram(t *testing.T) {
	addr, got := receiver(t)
	s, err := New(Options{Target: addr, Queue: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	line := []byte(`{"a":1}`)
	s.Send(line)
	line[5] = '2' // Send copied it
	s.Send(line)
	s.Send([]byte(`{"a":3}`))
	testenv.Eventually(t, 20*time.Second, func() bool { return len(got()) == 3 }, "3 datagrams")
	if want := []string{`{"a":1}`, `{"a":2}`, `{"a":3}`}; fmt.Sprint(got()) != fmt.Sprint(want) {
		t.Errorf("datagrams %q, want %q", got(), want)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return s.Counters().Sent.Load() == 3 }, "sent 3")
}

func TestBatches(t *testing.T) {
	addr, got := receiver(t)
	var c Counters
	s, err := New(Options{Target: addr, Queue: 4, Batch: 20, FlushInterval: time.Hour, Counters: &c})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"aaaa\n", "bbbb", "cccc\n", "dddd\n", strings.Repeat("x", 30) + "\n", "eeee\n"} {
		s.Send([]byte(l))
	}
	// "aaaa\nbbbb\ncccc\ndddd\n" fills 20 bytes; the long line goes alone;
	// "eeee\n" waits for a flush.
	testenv.Eventually(t, 20*time.Second, func() bool { return len(got()) == 2 }, "2 datagrams")
	s.Flush()
	testenv.Eventually(t, 20*time.Second, func() bool { return len(got()) == 3 }, "3 datagrams")
	s.Send([]byte("ffff\n"))
	if err := s.Close(); err != nil { // sends what is left
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, func() bool { return len(got()) == 4 }, "4 datagrams")
	want := []string{"aaaa\nbbbb\ncccc\ndddd\n", strings.Repeat("x", 30) + "\n", "eeee\n", "ffff\n"}
	if fmt.Sprintf("%q", got()) != fmt.Sprintf("%q", want) {
		t.Errorf("datagrams\n%q\nwant\n%q", got(), want)
	}
	if c.Sent.Load() != 7 || c.QueueFull.Load() != 0 || c.SendErrors.Load() != 0 {
		t.Errorf("sent %d, queue full %d, errors %d; want 7, 0, 0", c.Sent.Load(), c.QueueFull.Load(), c.SendErrors.Load())
	}
	s.Send([]byte("late"))
	if c.QueueFull.Load() != 1 {
		t.Errorf("a line after Close is not counted as dropped")
	}
}

// blockingConn is a net.Conn whose writes wait for release, or fail.
type blockingConn struct {
	net.Conn
	writing chan struct{}
	release chan struct{}
	fail    error
}

func (b *blockingConn) Write(p []byte) (int, error) {
	if b.fail != nil {
		return 0, b.fail
	}
	b.writing <- struct{}{}
	<-b.release
	return len(p), nil
}
func (b *blockingConn) Close() error         { return nil }
func (b *blockingConn) RemoteAddr() net.Addr { return &net.UDPAddr{} }

func TestDropsWhenBehind(t *testing.T) {
	conn := &blockingConn{writing: make(chan struct{}, 8), release: make(chan struct{})}
	var c Counters
	s := newSender(conn, Options{Queue: 3, Counters: &c})
	s.Send([]byte("1"))
	<-conn.writing // the sender holds line 1 in its write
	for i := 2; i <= 6; i++ {
		s.Send([]byte(fmt.Sprint(i))) // lines 2, 3 fill the other buffers; 4, 5, 6 find none
	}
	if c.QueueFull.Load() != 3 {
		t.Fatalf("queue full %d, want 3", c.QueueFull.Load())
	}
	close(conn.release)
	testenv.Eventually(t, 20*time.Second, func() bool { return c.Sent.Load() == 3 }, "sent 3")
	s.Close()
	m := NewMetrics("nginx", &c)
	want := `
# HELP ipng_logtail_lines_dropped_total Access-log lines not sent to the logtail target: the sender was behind (queue_full) or the write failed (send_error).
# TYPE ipng_logtail_lines_dropped_total counter
ipng_logtail_lines_dropped_total{reason="queue_full",source="nginx"} 3
ipng_logtail_lines_dropped_total{reason="send_error",source="nginx"} 0
# HELP ipng_logtail_lines_sent_total Access-log lines sent to the UDP logtail target (in datagrams the kernel accepted).
# TYPE ipng_logtail_lines_sent_total counter
ipng_logtail_lines_sent_total{source="nginx"} 3
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

func TestWriteErrorsCounted(t *testing.T) {
	conn := &blockingConn{fail: errors.New("no route to host")}
	var c Counters
	s := newSender(conn, Options{Queue: 8, Batch: 100, Counters: &c})
	for range 3 {
		s.Send([]byte("line"))
	}
	s.Close() // the batch of 3 lines fails as one datagram
	if c.SendErrors.Load() != 3 || c.Sent.Load() != 0 {
		t.Errorf("send errors %d, sent %d; want 3, 0", c.SendErrors.Load(), c.Sent.Load())
	}
}

// TestRealWriteErrors sends to a local port nothing listens on: the
// kernel's port-unreachable makes later writes fail, and every line is
// either sent, dropped or failed.
func TestRealWriteErrors(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	var c Counters
	s, err := New(Options{Target: addr, Queue: 4, Counters: &c})
	if err != nil {
		t.Fatal(err)
	}
	lines := uint64(0)
	testenv.Eventually(t, 20*time.Second, func() bool {
		s.Send([]byte("x"))
		lines++
		return c.SendErrors.Load() > 0
	}, "a write error")
	s.Close()
	if sum := c.Sent.Load() + c.QueueFull.Load() + c.SendErrors.Load(); sum != lines {
		t.Errorf("sent %d + queue full %d + errors %d = %d, want the %d lines", c.Sent.Load(), c.QueueFull.Load(), c.SendErrors.Load(), sum, lines)
	}
}

// TestSendDoesNotAllocate: the nginx ingest calls Send on its hot path.
func TestSendDoesNotAllocate(t *testing.T) {
	addr, _ := receiver(t)
	for _, batch := range []int{0, 8 << 10} {
		s, err := New(Options{Target: addr, Queue: 4096, Batch: batch})
		if err != nil {
			t.Fatal(err)
		}
		line := []byte(`{"status":"200","request_length":"120","bytes_sent":"512"}`)
		if n := testing.AllocsPerRun(1000, func() { s.Send(line) }); n != 0 {
			t.Errorf("batch %d: %v allocations per Send, want 0", batch, n)
		}
		s.Close()
	}
}

// TestMetricsOfTwoSourcesInOneRegistry: the agent registers the nginx
// ingest and the proxy, each with its Metrics, in one registry.
func TestMetricsOfTwoSourcesInOneRegistry(t *testing.T) {
	var n, p Counters
	n.Sent.Add(2)
	p.SendErrors.Add(1)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(NewMetrics("nginx", &n)); err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(NewMetrics("proxy", &p)); err != nil {
		t.Fatalf("second source: %v", err)
	}
	want := `
# HELP ipng_logtail_lines_sent_total Access-log lines sent to the UDP logtail target (in datagrams the kernel accepted).
# TYPE ipng_logtail_lines_sent_total counter
ipng_logtail_lines_sent_total{source="nginx"} 2
ipng_logtail_lines_sent_total{source="proxy"} 0
# HELP ipng_logtail_lines_dropped_total Access-log lines not sent to the logtail target: the sender was behind (queue_full) or the write failed (send_error).
# TYPE ipng_logtail_lines_dropped_total counter
ipng_logtail_lines_dropped_total{reason="queue_full",source="nginx"} 0
ipng_logtail_lines_dropped_total{reason="queue_full",source="proxy"} 0
ipng_logtail_lines_dropped_total{reason="send_error",source="nginx"} 0
ipng_logtail_lines_dropped_total{reason="send_error",source="proxy"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
