package proxy

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/httpstats"
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

// TestLogtailDrops: when the sender's queue is full, datagrams are dropped
// and counted and the writer does not block.
func TestLogtailDrops(t *testing.T) {
	a := &accessLog{cfg: config.ProxyAccessLogConfig{}, limit: 64, queue: make(chan []byte, 2), done: make(chan struct{})}
	e := &httpstats.Entry{Info: attribution.Info{Tag: "t"}}
	done := make(chan struct{})
	go func() {
		for range 50 {
			a.write(e) // each line is over 64 bytes: one datagram per line
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("write blocked")
	}
	if d := a.Dropped(); d < 40 {
		t.Errorf("dropped %d datagrams, want at least 40", d)
	}
}
