package topo

import (
	"path/filepath"
	"testing"

	"github.com/ipng/ipng-stats/internal/testenv"
	"github.com/ipng/ipng-stats/loader"
)

// Cgroup is a throw-away child cgroup; see testenv.Cgroup.
type Cgroup = testenv.Cgroup

// Cgroup2Mount is loader.Cgroup2Mount: the production code and the tests
// must agree on where cgroup2 is.
func Cgroup2Mount() (string, error) { return loader.Cgroup2Mount() }

// NewCgroup creates a uniquely named child cgroup of the cgroup2 mount. Its
// cleanup kills every process still in it and removes it.
func NewCgroup(t testing.TB) *Cgroup {
	t.Helper()
	Require(t)
	mnt, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	return testenv.NewCgroup(t, mnt)
}

// PinDir returns a unique, not yet existing directory "ipngt-<random>" on
// the bpf filesystem for an agent's pins; its cleanup detaches and
// removes whatever was pinned there.
func PinDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(loader.DefaultBPFFS, nsPrefix+testenv.RandomID())
	t.Cleanup(func() {
		if err := loader.Detach(dir); err != nil {
			t.Errorf("removing pins: %v", err)
		}
	})
	return dir
}
