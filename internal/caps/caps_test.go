package caps

import (
	"errors"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParse(t *testing.T) {
	s, err := Parse("Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001fffeffffff\nCapEff:\t0000000000000400\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000001\n")
	if err != nil {
		t.Fatal(err)
	}
	if s != (Sets{Inh: 0, Prm: 0x1fffeffffff, Eff: 0x400, Bnd: 0x1ffffffffff, Amb: 1}) {
		t.Errorf("%+v", s)
	}
	if _, err := Parse("Name:\tx\n"); err == nil {
		t.Error("a status without capability lines parsed")
	}
	if _, err := Parse("CapInh:\tzz\n"); err == nil {
		t.Error("a bad hex value parsed")
	}
}

func TestKeep(t *testing.T) {
	for _, c := range []struct {
		name string
		n    Needs
		want []Cap
	}{
		{"nothing", Needs{}, nil},
		{"proxy", Needs{BindLowPorts: true, Pins: true}, []Cap{unix.CAP_DAC_READ_SEARCH, unix.CAP_NET_BIND_SERVICE}},
		{"nginx", Needs{NginxSpool: true, Pins: true}, []Cap{unix.CAP_DAC_OVERRIDE, unix.CAP_FOWNER}},
		// A probe that is refused without CAP_BPF keeps it.
		{"old kernel", Needs{MapAccess: func() error { return unix.EPERM }}, []Cap{unix.CAP_BPF}},
		{"new kernel", Needs{MapAccess: func() error { return nil }}, nil},
		{"other error", Needs{MapAccess: func() error { return errors.New("x") }}, nil},
	} {
		got, why := Keep(c.n)
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: keep %v, want %v", c.name, got, c.want)
		}
		for _, k := range got {
			if why[k] == "" {
				t.Errorf("%s: no reason for %v", c.name, k)
			}
		}
	}
}

// TestProbeRunsWithoutCapBPF: the probe's thread has neither CAP_BPF nor
// CAP_SYS_ADMIN, and the caller's thread keeps what it had.
func TestProbeRunsWithoutCapBPF(t *testing.T) {
	before, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	var inProbe Sets
	probeNeedsBPF(func() error {
		inProbe, err = ReadFile("/proc/thread-self/status")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if inProbe.Eff&(1<<unix.CAP_BPF|1<<unix.CAP_SYS_ADMIN) != 0 {
		t.Errorf("probe ran with CapEff %016x", inProbe.Eff)
	}
	if inProbe.Eff != before.Eff&^(1<<unix.CAP_BPF|1<<unix.CAP_SYS_ADMIN) {
		t.Errorf("probe CapEff %016x, process %016x", inProbe.Eff, before.Eff)
	}
	if after, _ := Read(); after != before {
		t.Errorf("process sets changed by the probe: %+v → %+v", before, after)
	}
}

func TestLowPort(t *testing.T) {
	for addr, want := range map[string]bool{":80": true, "127.0.0.1:443": true, ":9113": false, "[::1]:1023": true,
		":1024": false, ":0": false, "nonsense": false, "vsock://1:80": false} {
		if LowPort(addr) != want {
			t.Errorf("LowPort(%q) = %v", addr, !want)
		}
	}
}
