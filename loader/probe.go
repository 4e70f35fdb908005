package loader

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// Probe loads the program with private (unpinned) maps, attaches it to the
// configured cgroup and detaches it again: it proves that Load would work
// without touching the pins of a running agent. The cgroup path it checked
// is returned.
func Probe(cfg Config) (string, error) {
	cgroup, err := ResolveCgroup(cfg.Cgroup)
	if err != nil {
		return "", err
	}
	spec, err := programSpec(cfg)
	if err != nil {
		return cgroup, err
	}
	var objs ipngbpf.SockopsObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return cgroup, explain("loading sock_ops program", err)
	}
	defer objs.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: ebpf.AttachCGroupSockOps, Program: objs.IpngSockops})
	if err != nil {
		return cgroup, explain(fmt.Sprintf("attaching sock_ops to cgroup %q", cgroup), err)
	}
	return cgroup, l.Close()
}

// NetnsCookie returns the cookie of the calling thread's network namespace,
// the first field of the 4-tuple key of the ring of stamps.
func NetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("netns cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("netns cookie (SO_NETNS_COOKIE needs Linux 5.14+): %w", err)
	}
	return c, nil
}
