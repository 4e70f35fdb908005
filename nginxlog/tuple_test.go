package nginxlog

import (
	"os"
	"testing"

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
