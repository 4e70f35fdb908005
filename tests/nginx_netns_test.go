package tests

import (
	"fmt"
	"os"
	"testing"

	"github.com/ipng/ipng-stats/nginxlog"
)

// TestNginxOtherNetns: the agent runs in another network namespace than
// nginx (a containerised nginx). The tuple key carries the namespace's
// cookie: without nginx.netns every line misses (nginx_tuple_never_seen,
// counted, default tag); with nginx.netns pointing at nginx's namespace
// every line is found.
func TestNginxOtherNetns(t *testing.T) {
	for _, tc := range []struct {
		name    string
		netns   bool
		misses  bool
		wantTag string
	}{{"without nginx.netns", false, true, "direct"}, {"with nginx.netns", true, false, ""}} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNginxEnv(t, 1, "")
			n.helperInRoot = true
			yml := fmt.Sprintf("nginx:\n  enabled: true\n  log_file: %s\n  poll_interval: 20ms\n", n.logFile)
			if tc.netns {
				yml += "  netns: " + n.topo.Srv.Path + "\n"
			}
			if err := os.WriteFile(n.helperCfg, []byte(yml), 0o644); err != nil {
				t.Fatal(err)
			}
			n.startHelper()
			_, sent := n.load(t, 100)
			st := n.waitLines(sent)
			if tc.misses {
				if st.Stats.TupleMisses != sent || st.Fallbacks[nginxlog.ReasonNeverSeen] != sent {
					t.Errorf("misses %d, fallbacks %v; want %d %s", st.Stats.TupleMisses, st.Fallbacks, sent, nginxlog.ReasonNeverSeen)
				}
				for k := range st.Requests {
					if k[:len(tc.wantTag)] != tc.wantTag {
						t.Errorf("series %q, want only the default tag", k)
					}
				}
			} else if st.Stats.TupleMisses != 0 || st.Stats.Recorded != sent {
				t.Errorf("stats %+v, want %d recorded and no miss", st.Stats, sent)
			}
		})
	}
}
