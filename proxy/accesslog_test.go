package proxy

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/httpstats"
	"github.com/ipng/ipng-stats/logtail"
)

func TestAppendEntry(t *testing.T) {
	tests := []struct {
		name, uri, ua string
	}{
		{"plain", "/index.html?a=b", "curl/8.0"},
		{"quotes and controls", "/\"x\"\\y", "ua\t\x01\n"},
		{"utf-8 and invalid", "/caf\u00e9", "bad\xff\xfe"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &http.Request{Method: "GET", Host: "example.org", RequestURI: tc.uri, Proto: "HTTP/1.1",
				Header: http.Header{"User-Agent": {tc.ua}}}
			e := &httpstats.Entry{Time: time.Unix(1700000000, 0),
				Info: attribution.Info{Tag: "maglev", Device: "gre0",
					Local:  netip.MustParseAddrPort("[::ffff:192.0.2.10]:80"),
					Remote: netip.MustParseAddrPort("[2001:db8::1]:5000")},
				Request: r, Upstream: "10.0.0.1:8080",
				Outcome: collector.Outcome{Status: 502, RequestBytes: 10, ResponseBytes: 20, Duration: 1500 * time.Microsecond}}
			line := appendEntry(nil, e)
			var got map[string]any
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if got["uri"] != tc.uri && tc.name != "utf-8 and invalid" {
				t.Errorf("uri %q, want %q", got["uri"], tc.uri)
			}
			if got["vip"] != "192.0.2.10" || got["remote"] != "2001:db8::1" || got["source_tag"] != "maglev" ||
				got["device"] != "gre0" || got["status"] != 502.0 || got["duration"] != 0.0015 || got["upstream"] != "10.0.0.1:8080" {
				t.Errorf("entry %s", line)
			}
		})
	}
}

// TestLogtailWriteErrors: the access log's logtail counts the lines whose
// datagram the kernel refused (here: nothing listens on the target, so the
// port-unreachable makes later writes fail); every line is sent, dropped or
// failed, and writing never blocks.
func TestLogtailWriteErrors(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target := pc.LocalAddr().String()
	pc.Close()
	var c logtail.Counters
	a, err := newAccessLog(config.ProxyAccessLogConfig{Logtail: config.ProxyLogtailConfig{Target: target, Buffer: 64}}, &c, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &httpstats.Entry{Info: attribution.Info{Tag: "t"}}
	lines := uint64(0)
	for deadline := time.Now().Add(20 * time.Second); c.SendErrors.Load() == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no write error counted")
		}
		a.write(e) // each line is over 64 bytes: one datagram per line
		lines++
	}
	a.close()
	if sum := c.Sent.Load() + c.QueueFull.Load() + c.SendErrors.Load(); sum != lines {
		t.Errorf("sent %d + dropped %d + failed %d = %d, want the %d lines written", c.Sent.Load(), c.QueueFull.Load(), c.SendErrors.Load(), sum, lines)
	}
}
