package tests

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/testenv"
)

// TestNginxSpoolFull: with the ingest stopped and a 1 MiB spool, nginx
// fills the tmpfs and keeps serving every request (its writes fail, it
// never blocks); memory stays at the tmpfs size. After SIGCONT the ingest
// counts the full spool (ipng_nginx_spool_full_total), nginx's error log
// names the failed writes (at most once a minute), and lines written once
// there is room again are all counted: the line nginx glues to the fragment
// of its last partial write is recovered (nginx_torn).
func TestNginxSpoolFull(t *testing.T) {
	n := newNginxEnv(t, 1, "")
	if err := unix.Mount("tmpfs", n.spool, "tmpfs", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=0755"); err != nil {
		t.Fatal(err)
	}
	h := n.startHelper()
	h.cmd.Process.Signal(syscall.SIGSTOP)
	_, lost := n.load(t, 5000) // ~3 MB of lines: every request must still succeed
	var st unix.Statfs_t
	if err := unix.Statfs(n.spool, &st); err != nil {
		t.Fatal(err)
	}
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 1<<20 {
		t.Errorf("spool uses %d bytes, more than its 1 MiB", used)
	}
	h.cmd.Process.Signal(syscall.SIGCONT)
	testenv.Eventually(t, 10*time.Second, func() bool {
		s, err := n.state()
		return err == nil && s.Stats.SpoolFull >= 1
	}, "spool full counted")
	errLog, _ := os.ReadFile(filepath.Join(n.dir, "error.log"))
	if !strings.Contains(string(errLog), "No space left on device") && !strings.Contains(string(errLog), "was incomplete") {
		t.Errorf("nginx's error log does not name the failed writes:\n%s", errLog)
	}
	before, err := n.state()
	if err != nil {
		t.Fatal(err)
	}
	if before.Stats.Lines >= lost {
		t.Errorf("read %d lines of %d: the spool cannot have held them all", before.Stats.Lines, lost)
	}
	// nginx may still hold one failed buffer's worth; what comes after the
	// agent caught up is counted exactly.
	time.Sleep(1500 * time.Millisecond)
	base, _ := n.state()
	want, sent := n.load(t, 500)
	after := n.waitLines(base.Stats.Lines + sent)
	got := map[string]uint64{}
	for k, v := range after.Requests {
		if d := v - base.Requests[k]; d > 0 {
			got[k] = d
		}
	}
	if after.Stats.Lines-base.Stats.Lines != sent || !maps.Equal(got, want) {
		t.Errorf("after the spool drained: %d lines %v, want %d %v", after.Stats.Lines-base.Stats.Lines, got, sent, want)
	}
}
