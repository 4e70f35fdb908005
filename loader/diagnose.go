package loader

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Linux capability numbers (linux/capability.h); x/sys/unix has them too but
// we need names beside them.
var neededCaps = []struct {
	bit  uint
	name string
	why  string
}{
	{unix.CAP_BPF, "CAP_BPF", "load the program and create maps"},
	{unix.CAP_NET_ADMIN, "CAP_NET_ADMIN", "attach sock_ops to a cgroup"},
	{unix.CAP_PERFMON, "CAP_PERFMON", "read kernel socket fields through BTF (skb_iif)"},
}

// MissingCapabilities lists the capabilities the loader needs that this
// process does not have in its effective set. CAP_SYS_ADMIN stands in for all
// of them.
func MissingCapabilities() ([]string, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil, fmt.Errorf("reading capabilities: %w", err)
	}
	has := func(bit uint) bool { return data[bit/32].Effective&(1<<(bit%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return nil, nil
	}
	var missing []string
	for _, c := range neededCaps {
		if !has(c.bit) {
			missing = append(missing, c.name)
		}
	}
	return missing, nil
}

// requireCapabilities fails early, naming what is missing, rather than with
// the first EPERM of whichever step comes first.
func requireCapabilities() error {
	missing, err := MissingCapabilities()
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return fmt.Errorf("loading the sock_ops program needs %s: missing capabilities %s (run as root, or grant them: AmbientCapabilities=%s in the systemd unit); or use attribution mode \"fallback\", which needs none",
			capNames(), strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	return nil
}

func capNames() string {
	var names []string
	for _, c := range neededCaps {
		names = append(names, c.name+" ("+c.why+")")
	}
	return strings.Join(names, ", ")
}

// explain turns a load or attach error into one an operator can act on.
func explain(what string, err error) error {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return fmt.Errorf("%s: the kernel verifier rejected the program (kernel %s): %+v", what, kernelRelease(), verr)
	}
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		if missing, cerr := MissingCapabilities(); cerr == nil && len(missing) > 0 {
			return fmt.Errorf("%s: %w: missing capabilities %s (run as root, or grant them: AmbientCapabilities=%s in the systemd unit); or use attribution mode \"fallback\", which needs none",
				what, err, strings.Join(missing, ", "), strings.Join(missing, " "))
		}
		return fmt.Errorf("%s: %w (capabilities look sufficient: check kernel.unprivileged_bpf_disabled, lockdown or an LSM)", what, err)
	}
	if _, serr := os.Stat("/sys/kernel/btf/vmlinux"); serr != nil {
		return fmt.Errorf("%s: %w: the kernel has no BTF (/sys/kernel/btf/vmlinux is missing; CONFIG_DEBUG_INFO_BTF=y is required for the sock_ops program); use attribution mode \"fallback\"", what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
