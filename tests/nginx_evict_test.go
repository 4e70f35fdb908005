package tests

import (
	"syscall"
	"testing"

	"github.com/ipng/ipng-stats/nginxlog"
)

// TestNginxEvicted: with a 1024-entry tuple map and the ingest stopped,
// 3000 requests on new connections push the first connections' entries out
// of the map before their lines are read. Those lines are recorded with the
// default tag and counted as nginx_tuple_evicted, exactly (the ring of
// stamped 4-tuples remembers 4 × 1024 stamps, more than the test makes),
// never as never_seen; nothing is lost.
func TestNginxEvicted(t *testing.T) {
	n := newNginxEnv(t, 1, "", "bpf:\n  tuple_map_entries: 1024\n")
	h := n.startHelper()
	h.cmd.Process.Signal(syscall.SIGSTOP)
	c := n.clientKeepAlive(n.topo.C1, "ipv4", n.port, false)
	const sent = 3000
	for range sent {
		if err := c.get(200); err != nil {
			t.Fatal(err)
		}
	}
	h.cmd.Process.Signal(syscall.SIGCONT)
	st := n.waitLines(sent)
	ev, never := st.Fallbacks[nginxlog.ReasonEvicted], st.Fallbacks[nginxlog.ReasonNeverSeen]
	t.Logf("evicted %d, never seen %d, requests %v", ev, never, st.Requests)
	if ev == 0 || never != 0 || st.Stats.TupleMisses != ev {
		t.Errorf("fallbacks %v, misses %d: want only %s", st.Fallbacks, st.Stats.TupleMisses, nginxlog.ReasonEvicted)
	}
	vip := n.topo.VIP4.String()
	if got := st.Requests["tag1 "+vip+" 2xx"] + st.Requests["direct "+vip+" 2xx"]; got != sent || st.Requests["direct "+vip+" 2xx"] != ev {
		t.Errorf("requests %v, want %d in all, %d of them direct", st.Requests, sent, ev)
	}
}
