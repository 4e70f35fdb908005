package nginxlog

import (
	"os"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/loader"
)

func TestNetnsCookie(t *testing.T) {
	own, err := loader.NetnsCookie()
	if err != nil {
		testenv.Skip(t, err.Error())
	}
	tests := []struct {
		name, path string
		ok         bool
	}{
		{"own namespace by default", "", true},
		{"missing path", "/nonexistent/ns", false},
	}
	if os.Geteuid() == 0 {
		tests = append(tests, struct {
			name, path string
			ok         bool
		}{"own namespace by path (setns)", "/proc/self/ns/net", true})
	}
	for _, tt := range tests {
		got, err := netnsCookie(tt.path)
		if (err == nil) != tt.ok || (tt.ok && got != own) {
			t.Errorf("%s: netnsCookie(%q) = %d, %v; want %d, ok %v", tt.name, tt.path, got, err, own, tt.ok)
		}
	}
}

func TestMissReason(t *testing.T) {
	clk := clockOffset{realNow: time.Unix(1700000100, 0).UnixNano()}
	rec := func(connTime time.Duration, msec int64) *Record {
		return &Record{ConnTime: connTime, Msec: msec}
	}
	tests := []struct {
		name     string
		stamped  uint64
		lifetime time.Duration
		r        *Record
		want     string
	}{
		{"map never full", 100, 0, rec(time.Hour, 1700000100000), ReasonNeverSeen},
		{"full, age unknown", 1 << 20, 10 * time.Second, rec(-1, 0), ReasonEvicted},
		{"full, old connection", 1 << 20, 10 * time.Second, rec(20*time.Second, 1700000100000), ReasonEvicted},
		{"full, young connection", 1 << 20, 10 * time.Second, rec(time.Second, 1700000100000), ReasonNeverSeen},
		{"full, line read late", 1 << 20, 10 * time.Second, rec(time.Second, 1700000090000), ReasonEvicted},
	}
	for _, tt := range tests {
		tl := &tupleLookup{capacity: 4096, stamped: tt.stamped, lifetime: tt.lifetime}
		if got := tl.missReason(tt.r, &clk); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}
