// Package caps drops the Linux capabilities of a node (the agent once the
// sock_ops program is attached, the proxy command once its listeners are
// bound and the agent's pins opened), on every thread of the process.
//
// Capabilities belong to a thread, not to a process: capset(2) and
// prctl(PR_CAPBSET_DROP) change the calling thread only, and a Go program
// runs goroutines on many threads, some created before the drop. Drop runs
// each call on every thread with syscall.AllThreadsSyscall, the runtime's
// own mechanism (libcap's psx package uses it too in a build without cgo).
// Threads the runtime creates later are cloned from a thread that already
// dropped, so they inherit the reduced sets. AllThreadsSyscall refuses to
// run in a binary linked with cgo (other threads may run C code the runtime
// cannot stop): the release binary is built with CGO_ENABLED=0, and a cgo
// build gets ErrCgo, which the node reports.
package caps

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/loader"
)

// Cap is a capability number (unix.CAP_*).
type Cap uint

// Names of the capabilities a node may keep, for messages.
var names = map[Cap]string{
	unix.CAP_NET_BIND_SERVICE: "CAP_NET_BIND_SERVICE",
	unix.CAP_DAC_OVERRIDE:     "CAP_DAC_OVERRIDE",
	unix.CAP_DAC_READ_SEARCH:  "CAP_DAC_READ_SEARCH",
	unix.CAP_FOWNER:           "CAP_FOWNER",
	unix.CAP_BPF:              "CAP_BPF",
	unix.CAP_SYS_ADMIN:        "CAP_SYS_ADMIN",
	unix.CAP_NET_ADMIN:        "CAP_NET_ADMIN",
	unix.CAP_PERFMON:          "CAP_PERFMON",
	unix.CAP_SETPCAP:          "CAP_SETPCAP",
}

func (c Cap) String() string {
	if n, ok := names[c]; ok {
		return n
	}
	return "cap_" + strconv.Itoa(int(c))
}

// ErrCgo is returned by Drop in a binary built with cgo, where the
// capabilities of every thread cannot be changed.
var ErrCgo = errors.New("this binary is built with cgo, so the capabilities of all its threads cannot be dropped (build with CGO_ENABLED=0, as the release binary is)")

// Needs are what a node still does once it runs: the agent after the
// program is attached, the proxy command after its listeners are bound.
type Needs struct {
	// BindLowPorts: listeners below port 1024 may still be bound (the
	// proxy's listeners on a reload; a metrics port below 1024).
	BindLowPorts bool
	// NginxSpool: the agent reopens nginx's access log (owned by nginx) read-write
	// after every rotation and punches holes in it.
	NginxSpool bool
	// Pins: the agent removes its pins at exit and re-pins when the pin
	// directory disappears; the bpffs root may be root's, mode 0700.
	Pins bool
	// TCPrograms: tc programs are attached to devices as they appear
	// (handshakes.enabled): attaching needs CAP_NET_ADMIN and CAP_BPF.
	TCPrograms bool
	// MapAccess, when not nil, performs one cheap operation on a map by its
	// file descriptor. Drop calls it on a thread without CAP_BPF and
	// CAP_SYS_ADMIN: kernels before 6.5 refuse every bpf(2) command to such
	// a thread when kernel.unprivileged_bpf_disabled is set, and then the
	// capability is kept.
	MapAccess func() error
}

// Keep returns the capabilities Drop keeps for n, and why.
func Keep(n Needs) (keep []Cap, why map[Cap]string) {
	why = map[Cap]string{}
	if n.BindLowPorts {
		why[unix.CAP_NET_BIND_SERVICE] = "listeners below port 1024 may be bound on a reload"
	}
	if n.NginxSpool {
		why[unix.CAP_DAC_OVERRIDE] = "the nginx access log belongs to nginx and is reopened read-write after rotation"
		why[unix.CAP_FOWNER] = "a spool file nginx created (0644) is narrowed to its owner when taken over, also after a rotation"
	} else if n.Pins {
		why[unix.CAP_DAC_READ_SEARCH] = "the pin directory is below the bpffs root, which may be root's with mode 0700"
	}
	if n.TCPrograms {
		why[unix.CAP_NET_ADMIN] = "tc programs are attached to bound devices as they appear (handshakes.enabled)"
		if capLastCap() >= unix.CAP_BPF {
			why[unix.CAP_BPF] = "tc programs are attached to bound devices as they appear (handshakes.enabled)"
		} else {
			why[unix.CAP_SYS_ADMIN] = "this kernel has no CAP_BPF: attaching tc programs needs CAP_SYS_ADMIN (handshakes.enabled)"
		}
	}
	if _, kept := why[unix.CAP_BPF]; !kept && n.MapAccess != nil && probeNeedsBPF(n.MapAccess) {
		if capLastCap() >= unix.CAP_BPF {
			why[unix.CAP_BPF] = "this kernel refuses bpf(2) on map descriptors without it (unprivileged BPF disabled)"
		} else {
			why[unix.CAP_SYS_ADMIN] = "this kernel has no CAP_BPF and refuses bpf(2) on map descriptors without CAP_SYS_ADMIN"
		}
	}
	for c := range why {
		keep = append(keep, c)
	}
	slices.Sort(keep)
	return keep, why
}

// Result says what Drop did.
type Result struct {
	Kept []Cap
	// BoundingKept is true when the bounding set could not be reduced (no
	// CAP_SETPCAP, as under the systemd unit, whose bounding set already is
	// the unit's list); no_new_privs still stops an exec from regaining any.
	BoundingKept bool
}

// Drop reduces the capabilities of every thread to keep (those of keep the
// process does not have stay absent): the bounding set, then the ambient
// and inheritable sets (emptied), then the permitted and effective sets. It
// also sets no_new_privs, so no exec can gain capabilities again. Nothing is
// ever added.
func Drop(keep []Cap) (Result, error) {
	res := Result{Kept: keep}
	last := capLastCap()
	// The bounding set first, while CAP_SETPCAP may still be effective.
	cur, err := Read()
	if err != nil {
		return res, err
	}
	if cur.Eff&(1<<unix.CAP_SETPCAP) != 0 {
		for c := Cap(0); c <= last; c++ {
			if slices.Contains(keep, c) || cur.Bnd&(1<<c) == 0 {
				continue
			}
			if err := allThreads(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0); err != nil {
				return res, fmt.Errorf("dropping %v from the bounding set: %w", c, err)
			}
		}
	} else {
		res.BoundingKept = true
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0); err != nil {
		return res, fmt.Errorf("clearing the ambient set: %w", err)
	}
	var mask uint64
	for _, c := range keep {
		mask |= 1 << c
	}
	mask &= cur.Prm
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(mask), Permitted: uint32(mask)},
		{Effective: uint32(mask >> 32), Permitted: uint32(mask >> 32)},
	}
	err = allThreads(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0)
	runtime.KeepAlive(&hdr)
	runtime.KeepAlive(&data)
	if err != nil {
		return res, fmt.Errorf("capset: %w", err)
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0); err != nil {
		return res, fmt.Errorf("setting no_new_privs: %w", err)
	}
	return res, nil
}

func allThreads(trap, a1, a2, a3 uintptr) error {
	_, _, errno := syscall.AllThreadsSyscall(trap, a1, a2, a3)
	switch {
	case errno == syscall.ENOTSUP:
		return ErrCgo
	case errno != 0:
		return errno
	}
	return nil
}

// probeNeedsBPF reports whether op fails with EPERM on a thread that has
// neither CAP_BPF nor CAP_SYS_ADMIN in its effective set. The probe runs on
// a thread of its own, which the runtime throws away afterwards (the
// goroutine exits while locked to it), so no other goroutine ever runs with
// the probe's capabilities.
func probeNeedsBPF(op func() error) bool {
	done := make(chan bool)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- false
			return
		}
		for _, c := range []Cap{unix.CAP_BPF, unix.CAP_SYS_ADMIN} {
			data[c/32].Effective &^= 1 << (c % 32)
		}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- false
			return
		}
		done <- errors.Is(op(), unix.EPERM)
	}()
	return <-done
}

// Sets are a thread's capability sets as /proc shows them.
type Sets struct{ Inh, Prm, Eff, Bnd, Amb uint64 }

// Read reads the sets of the calling thread's process from /proc/self/status
// (its main thread).
func Read() (Sets, error) { return ReadFile("/proc/self/status") }

// ReadFile reads the Cap* lines of a /proc/PID/status or /proc/PID/task/TID/status file.
func ReadFile(path string) (Sets, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Sets{}, err
	}
	return Parse(string(b))
}

// Parse reads the Cap* lines of a status file's text.
func Parse(status string) (Sets, error) {
	var s Sets
	fields := map[string]*uint64{"CapInh": &s.Inh, "CapPrm": &s.Prm, "CapEff": &s.Eff, "CapBnd": &s.Bnd, "CapAmb": &s.Amb}
	seen := 0
	for line := range strings.SplitSeq(status, "\n") {
		k, v, ok := strings.Cut(line, ":")
		p, want := fields[k]
		if !ok || !want {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return s, fmt.Errorf("%s: %w", k, err)
		}
		*p = n
		seen++
	}
	if seen != len(fields) {
		return s, errors.New("status has no capability lines")
	}
	return s, nil
}

// Mask is the set of caps as a bit mask.
func Mask(caps []Cap) uint64 {
	var m uint64
	for _, c := range caps {
		m |= 1 << c
	}
	return m
}

func capLastCap() Cap {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n < 64 {
			return Cap(n)
		}
	}
	return unix.CAP_LAST_CAP
}

// AfterAttach is Drop for what n still needs, logged: a node (the agent or
// the proxy command) calls it once, after the program is attached or the
// pins are opened, and its listeners are bound. In a cgo build it warns and
// keeps the capabilities (see ErrCgo).
func AfterAttach(n Needs, log *slog.Logger) error {
	keep, why := Keep(n)
	res, err := Drop(keep)
	if errors.Is(err, ErrCgo) {
		log.Warn("capabilities NOT dropped: the process keeps every capability it started with", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("dropping capabilities after attach: %w", err)
	}
	attrs := []any{"kept", capNames(res.Kept)}
	for _, c := range res.Kept {
		attrs = append(attrs, c.String(), why[c])
	}
	if res.BoundingKept {
		attrs = append(attrs, "bounding_set", "unchanged (no CAP_SETPCAP); no_new_privs is set")
	}
	log.Info("capabilities dropped", attrs...)
	return nil
}

func capNames(cs []Cap) string {
	if len(cs) == 0 {
		return "none"
	}
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return strings.Join(s, ",")
}

// MapProbe is Needs.MapAccess for the program's maps (nil without them): one
// read of the counters map.
func MapProbe(m *loader.Maps) func() error {
	if m == nil {
		return nil
	}
	return func() error {
		_, err := m.ReadCounters()
		return err
	}
}

// LowPort reports whether the host:port address listens below port 1024
// (port 0 and unparsable addresses are not low).
func LowPort(addr string) bool {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 1024
}
