package proxy

import (
	"os"
	"testing"
)

// TestMain lets the whole package run against either HTTP/1.1 serving
// loop: IPNG_STATS_HTTP1_LOOP=net_http makes proxy.http1_loop default to
// net/http's loop (the tests of the own loop itself set it explicitly).
func TestMain(m *testing.M) {
	if v := os.Getenv("IPNG_STATS_HTTP1_LOOP"); v != "" {
		defaultHTTP1Loop = v
	}
	os.Exit(m.Run())
}
