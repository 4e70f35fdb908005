package tests

import (
	"fmt"
	"maps"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/internal/testenv/topo"
)

// load sends n requests per client (one kept-alive connection each) from
// c1 (IPv4, eth1 → tag1) and c2 (IPv6, eth2 → tag2-v6), each cycling
// through the codes, and returns the expected counts.
func (n *nginxEnv) load(t *testing.T, per int) (map[string]uint64, uint64) {
	t.Helper()
	type src struct {
		ns   *topo.NS
		fam  string
		want string
	}
	srcs := []src{{n.topo.C1, "ipv4", "tag1 " + n.topo.VIP4.String()}, {n.topo.C2, "ipv6", "tag2-v6 " + n.topo.VIP6.String()}}
	want := map[string]uint64{}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, s := range srcs {
		c := n.client(s.ns, s.fam, n.port)
		for i := range per {
			want[s.want+" "+codeClass(nginxCodes[i%len(nginxCodes)])]++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if err := c.get(nginxCodes[i%len(nginxCodes)]); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("requests failed: %v", errs)
	}
	return want, uint64(per * len(srcs))
}

func addCounts(dst, src map[string]uint64) {
	for k, v := range src {
		dst[k] += v
	}
}

// TestNginxReloadReopen: `nginx -s reload`, `nginx -s reopen` and a
// logrotate-style rename + reopen in the middle of traffic; attribution and
// counts stay exact.
func TestNginxReloadReopen(t *testing.T) {
	n := newNginxEnv(t, 2, "")
	n.startHelper()
	want := map[string]uint64{}
	var sent uint64
	step := func(what string, action func()) {
		done := make(chan struct{})
		var w map[string]uint64
		var s uint64
		go func() { defer close(done); w, s = n.load(t, 400) }()
		time.Sleep(50 * time.Millisecond)
		action()
		<-done
		addCounts(want, w)
		sent += s
		t.Logf("%s: %d requests so far", what, sent)
	}
	step("reload", func() { n.signalNginx("reload") })
	step("reopen", func() { n.signalNginx("reopen") })
	step("rotate", func() {
		if err := os.Rename(n.logFile, n.logFile+".1"); err != nil {
			t.Fatal(err)
		}
		n.signalNginx("reopen")
	})
	step("reload again", func() { n.signalNginx("reload") })
	st := n.waitLines(sent)
	time.Sleep(1500 * time.Millisecond) // a line too many would show now
	if st, _ = n.state(); !maps.Equal(st.Requests, want) || st.Stats.Lines != sent || st.Stats.TupleMisses != 0 {
		t.Errorf("after reload/reopen/rotate:\n got  %v (stats %+v)\n want %v (%d lines)", st.Requests, st.Stats, want, sent)
	}
	if st.Stats.Reopens != 1 {
		t.Errorf("log reopens = %d, want 1 (the rotation)", st.Stats.Reopens)
	}
}

// TestNginxAgentStopped: with the ingest SIGSTOPped, nginx keeps serving
// (requests complete as fast as before); after SIGCONT every line is
// counted. Then the ingest is stopped (SIGTERM), traffic continues, and a
// new ingest counts what the old one did not: the sum is exact.
func TestNginxAgentStopped(t *testing.T) {
	n := newNginxEnv(t, 1, "")
	h := n.startHelper()
	timed := func(per int) (map[string]uint64, uint64, time.Duration) {
		start := time.Now()
		w, s := n.load(t, per)
		return w, s, time.Since(start)
	}
	want, sent, base := timed(2000)

	h.cmd.Process.Signal(syscall.SIGSTOP)
	w, s, stopped := timed(2000)
	addCounts(want, w)
	sent += s
	t.Logf("2x2000 requests: %v with the ingest running, %v with it stopped", base, stopped)
	if stopped > 3*base+time.Second {
		t.Errorf("nginx slowed down while the ingest was stopped: %v vs %v", stopped, base)
	}
	h.cmd.Process.Signal(syscall.SIGCONT)
	st := n.waitLines(sent)
	if !maps.Equal(st.Requests, want) {
		t.Errorf("after SIGCONT:\n got  %v\n want %v", st.Requests, want)
	}

	// Restart: lines written while no ingest runs are counted by the next.
	w, s = n.load(t, 500)
	addCounts(want, w)
	sent += s
	h.stop(t, syscall.SIGTERM)
	w, s = n.load(t, 500)
	addCounts(want, w)
	sent += s
	n.startHelper()
	testenv.Eventually(t, 15*time.Second, func() bool {
		st, err := n.state()
		n.mu.Lock()
		defer n.mu.Unlock()
		return err == nil && len(n.finals) == 1 && n.finals[0].Stats.Lines+st.Stats.Lines >= sent
	}, "all lines over both ingests")
	time.Sleep(1500 * time.Millisecond)
	st, err := n.state()
	if err != nil {
		t.Fatal(err)
	}
	total := map[string]uint64{}
	addCounts(total, n.finals[0].Requests)
	addCounts(total, st.Requests)
	if !maps.Equal(total, want) || n.finals[0].Stats.Lines+st.Stats.Lines != sent {
		t.Errorf("over the restart:\n got  %v (%d + %d lines)\n want %v (%d)", total, n.finals[0].Stats.Lines, st.Stats.Lines, want, sent)
	}
}

// TestNginxMalformedFlood: a flood of malformed and truncated lines written
// into the spool between nginx's lines is rejected and counted by reason;
// the ingest stays healthy and nginx's own lines are all counted.
func TestNginxMalformedFlood(t *testing.T) {
	n := newNginxEnv(t, 2, "")
	n.startHelper()
	bad := []string{
		"not json at all",
		`{"server_addr":"192.0.2.10","server_port":"80"`,                                      // truncated
		`{"server_addr":"192.0.2.10"}`,                                                        // missing fields
		strings.Replace(nginxLine(), `"status":"200"`, `"status":"2x0"`, 1),                   // bad number
		strings.Replace(nginxLine(), `"remote_addr":"10.1.0.2"`, `"remote_addr":"::1::2"`, 1), // bad address
		"{" + strings.Repeat("x", 20000) + "}",                                                // too long
		"\x00\x01\x02\xff",
	}
	reasons := []string{"nginx_malformed", "nginx_malformed", "nginx_missing_field", "nginx_bad_number", "nginx_bad_address", "nginx_too_long", "nginx_malformed"}
	const rounds = 2000
	wantRejected := map[string]uint64{}
	var flood strings.Builder
	for range rounds {
		for i, b := range bad {
			flood.WriteString(b + "\n")
			wantRejected[reasons[i]]++
		}
	}
	f, err := os.OpenFile(n.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	done := make(chan struct{})
	var want map[string]uint64
	var sent uint64
	go func() { defer close(done); want, sent = n.load(t, 1000) }()
	data := flood.String()
	for len(data) > 0 { // whole lines per write, like nginx
		i := strings.LastIndexByte(data[:min(len(data), 64<<10)], '\n') + 1
		if i == 0 {
			i = strings.IndexByte(data, '\n') + 1
		}
		if _, err := f.WriteString(data[:i]); err != nil {
			t.Fatal(err)
		}
		data = data[i:]
	}
	<-done
	total := sent + uint64(rounds*len(bad))
	st := n.waitLines(total)
	if !maps.Equal(st.Requests, want) {
		t.Errorf("requests:\n got  %v\n want %v", st.Requests, want)
	}
	for r, w := range wantRejected {
		if st.Rejected[r] != w {
			t.Errorf("rejected[%s] = %d, want %d (all: %v)", r, st.Rejected[r], w, st.Rejected)
		}
	}
	if st.Stats.Lines != total || st.Stats.Rejected != uint64(rounds*len(bad)) {
		t.Errorf("stats %+v, want %d lines, %d rejected", st.Stats, total, rounds*len(bad))
	}
}

// nginxLine is a well-formed line in the shipped format.
func nginxLine() string {
	return fmt.Sprintf(`{"server_addr":"192.0.2.10","server_port":"80","remote_addr":"10.1.0.2","remote_port":"40000","status":"200","request_length":"75","bytes_sent":"250","request_time":"0.000"}`)
}
