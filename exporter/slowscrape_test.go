package exporter

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ipng/ipng-stats/collector"
)

// TestSlowScrape: a client that reads /metrics slower than any scraper
// (it stops reading after the first bytes of an 8 MB body) does not hold
// up a concurrent scrape, nor the counting: requests recorded meanwhile are
// in the concurrent scrape. At the write timeout the slow one is cut off
// (its body ends short) and counted in
// ipng_exporter_rejected_total{reason="write_timeout"}; the next scrape
// has every count.
func TestSlowScrape(t *testing.T) {
	c := newTestCollector(t, collector.Config{})
	vip := netip.MustParseAddr("192.0.2.10")
	series := c.Series("tag1", vip)
	series.Record(collector.Outcome{Status: 200, Duration: time.Millisecond})
	// Padding, so that the body is larger than what the socket buffers of
	// both ends hold (tcp_wmem's maximum is 4 MiB by default).
	reg := prometheus.NewRegistry()
	pad := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "test_padding", Help: "Padding."}, []string{"pad"})
	reg.MustRegister(pad)
	for i := range 8000 {
		pad.WithLabelValues(fmt.Sprintf("%01000d", i)).Set(1)
	}
	s, err := New(Options{Collector: c, Registry: reg, WriteTimeout: 4 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	addr := serveLoopback(t, s)
	requests := func() uint64 {
		t.Helper()
		resp, err := (&http.Client{Timeout: 20 * time.Second}).Get("http://" + addr + StatszPath + "?format=json")
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		defer resp.Body.Close()
		var d Document
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, s := range d.Series {
			for _, c := range s.Codes {
				n += c.Requests
			}
		}
		return n
	}

	// The slow client: a small receive buffer, reads 1 KiB, then nothing.
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return serr
	}}
	slow, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", MetricsPath)
	slow.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(slow, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}

	// While it is stuck: counting goes on, a concurrent scrape sees it.
	series.Record(collector.Outcome{Status: 200, Duration: time.Millisecond})
	if got := requests(); got != 2 {
		t.Errorf("concurrent scrape: %d requests, want 2", got)
	}

	// The slow client is cut off at the write timeout (counted), and
	// its body ends short of the 8 MB.
	waitRejected(t, s, reasonWriteTimeout, 1)
	n, _ := io.Copy(io.Discard, slow)
	if n+1024 >= 8000*1000 {
		t.Errorf("the slow client read %d bytes: not cut off", n+1024)
	}
	series.Record(collector.Outcome{Status: 200, Duration: time.Millisecond})
	if got := requests(); got != 3 {
		t.Errorf("after the cut: %d requests, want 3", got)
	}
	for _, r := range rejectReasons {
		if want := map[bool]int{true: 1}[r == reasonWriteTimeout]; rejected(s, r) != want {
			t.Errorf("rejected %s = %d, want %d", r, rejected(s, r), want)
		}
	}
}
