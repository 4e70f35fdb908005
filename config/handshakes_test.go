package config

import (
	"strconv"
	"strings"
	"testing"
)

// TestHandshakesConfig: the handshakes keys decode, and bad values are
// clear errors naming the key.
func TestHandshakesConfig(t *testing.T) {
	c, err := Parse([]byte("handshakes:\n  enabled: false\n  ports: [80, 443]\n  diagnose_interval: 5s\n"), "c.yml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Handshakes.Enabled || len(c.Handshakes.Ports) != 2 || c.Handshakes.Ports[1] != 443 || c.Handshakes.DiagnoseInterval.Seconds() != 5 {
		t.Errorf("decoded %+v", c.Handshakes)
	}
	for _, tc := range []struct{ yaml, want string }{
		{"handshakes:\n  ports: [0]\n", "handshakes.ports[0]: must be a TCP port (1 to 65535), got 0"},
		{"handshakes:\n  ports: [80, 65536]\n", "handshakes.ports[1]: must be a TCP port (1 to 65535), got 65536"},
		{"handshakes:\n  ports: [80, 80]\n", "handshakes.ports[1]: duplicate port 80"},
		{"handshakes:\n  ports: [http]\n", "handshakes.ports[0]"},
		{"handshakes:\n  ports: 80\n", "want a list of integers"},
		{"handshakes:\n  ports_rescan_interval: 10ms\n", "handshakes.ports_rescan_interval: must be at least 1s"},
		{"handshakes:\n  diagnose_interval: 0s\n", "handshakes.diagnose_interval: must be at least 1s"},
		{"handshakes:\n  enable: true\n", `unknown key "enable"`},
	} {
		_, err := Parse([]byte(tc.yaml), "c.yml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to contain %q", tc.yaml, err, tc.want)
		}
	}
	many := "handshakes:\n  ports: ["
	for i := 1; i <= MaxHandshakePorts+1; i++ {
		if i > 1 {
			many += ","
		}
		many += strconv.Itoa(i)
	}
	if _, err := Parse([]byte(many+"]\n"), "c.yml"); err == nil || !strings.Contains(err.Error(), "at most 1024 ports") {
		t.Errorf("1025 ports: %v", err)
	}
}
