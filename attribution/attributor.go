// Package attribution resolves an accepted TCP connection, once, to the
// interface it arrived on and, through package bindings, to its source tag.
// Two methods: the sock_ops program's stamps (socket storage by fd, socket
// cookie as a second try) and the unprivileged IP_PKTINFO fallback of the
// original nginx module. It reads the BPF maps but never loads or attaches
// anything (package loader) and counts nothing per request (package
// collector).
package attribution

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/loader"
)

// Mode selects the attribution method.
type Mode string

const (
	// ModeAuto uses the BPF stamps when the program is loaded, with the
	// pktinfo fallback for sockets it has not stamped, and pktinfo alone
	// when it is not loaded.
	ModeAuto Mode = "auto"
	// ModeBPF uses the BPF stamps only and refuses to start without them.
	ModeBPF Mode = "bpf"
	// ModeFallback uses IP_PKTINFO only; it needs no privilege.
	ModeFallback Mode = "fallback"
)

// ParseMode accepts "auto", "bpf" and "fallback".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeBPF, ModeFallback:
		return m, nil
	}
	return "", fmt.Errorf("unknown attribution mode %q (want auto, bpf or fallback)", s)
}

// Method says how a connection's interface was found.
type Method uint8

const (
	MethodNone      Method = iota // not found: the connection gets the default tag
	MethodSkStorage               // BPF socket storage, looked up by fd
	MethodCookie                  // BPF map keyed by socket cookie
	MethodPktinfo                 // IP_PKTINFO / IPV6_RECVPKTINFO fallback
)

var methodNames = [...]string{"none", "sk_storage", "cookie", "pktinfo"}

func (m Method) String() string {
	if int(m) < len(methodNames) {
		return methodNames[m]
	}
	return fmt.Sprintf("method(%d)", uint8(m))
}

// FallbackReason says why a connection was not resolved by BPF.
type FallbackReason uint8

const (
	ReasonBPFUnavailable FallbackReason = iota // auto mode without the program: pktinfo used
	ReasonNotStamped                           // program loaded, socket not stamped (outside its cgroup, or accepted before it attached)
	ReasonBPFError                             // map lookup failed
	ReasonUnresolved                           // no method found the interface: default tag
	numReasons
)

var reasonNames = [numReasons]string{"bpf_unavailable", "not_stamped", "bpf_error", "unresolved"}

func (r FallbackReason) String() string { return reasonNames[r] }

// Options configure an Attributor.
type Options struct {
	Mode Mode
	// Maps of the loaded program (loader.Program.Maps or loader.OpenPinned);
	// nil when BPF is not available.
	Maps *loader.Maps
	// BPFError says why Maps is nil, for the log.
	BPFError error
	// Bindings maps interfaces to tags.
	Bindings *bindings.Resolver
	Logger   *slog.Logger
}

// Attributor resolves accepted connections. It is safe for concurrent use
// and does not allocate per connection.
type Attributor struct {
	mode      Mode
	maps      *loader.Maps // nil: no stamps looked up
	pktinfo   bool
	tags      *bindings.Resolver
	fallbacks [numReasons]atomic.Uint64
}

// New checks the mode against what is available and logs the method used.
func New(opts Options) (*Attributor, error) {
	if opts.Bindings == nil {
		return nil, errors.New("attribution needs a bindings resolver")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "attribution")
	a := &Attributor{mode: opts.Mode, tags: opts.Bindings}
	switch opts.Mode {
	case ModeBPF:
		if opts.Maps == nil {
			return nil, fmt.Errorf("attribution mode bpf needs the sock_ops program: %w", orUnknown(opts.BPFError))
		}
		a.maps = opts.Maps
		logger.Info("attribution by BPF socket stamps", "mode", opts.Mode)
	case ModeFallback:
		a.pktinfo = true
		logger.Info("attribution by IP_PKTINFO", "mode", opts.Mode)
	case ModeAuto:
		a.pktinfo = true
		if opts.Maps != nil {
			a.maps = opts.Maps
			logger.Info("attribution by BPF socket stamps, IP_PKTINFO for unstamped sockets", "mode", opts.Mode)
		} else {
			logger.Warn("BPF program not available; attribution by IP_PKTINFO", "mode", opts.Mode, "reason", orUnknown(opts.BPFError))
		}
	default:
		return nil, fmt.Errorf("unknown attribution mode %q", opts.Mode)
	}
	return a, nil
}

func orUnknown(err error) error {
	if err == nil {
		return errors.New("not loaded")
	}
	return err
}

// UsesBPF reports whether stamps are looked up.
func (a *Attributor) UsesBPF() bool { return a.maps != nil }

// UsesPktinfo reports whether listeners need PrepareListener.
func (a *Attributor) UsesPktinfo() bool { return a.pktinfo }

// Bindings returns the resolver used for tags.
func (a *Attributor) Bindings() *bindings.Resolver { return a.tags }

// PrepareListener readies a listening socket for the pktinfo method; it must
// run before the connections to resolve arrive. It does nothing when pktinfo
// is not used.
func (a *Attributor) PrepareListener(fd int) error {
	if !a.pktinfo {
		return nil
	}
	return EnablePktinfo(fd)
}

// Resolve finds the ingress interface of the accepted socket fd, whose
// connection is of family fam.
func (a *Attributor) Resolve(fd int, fam bindings.Family) (uint32, Method) {
	if a.maps != nil {
		if ifindex, m, err := a.lookupBPF(fd); err == nil && ifindex != 0 {
			return ifindex, m
		} else if err != nil {
			a.fallbacks[ReasonBPFError].Add(1)
		} else {
			a.fallbacks[ReasonNotStamped].Add(1)
		}
	} else if a.mode == ModeAuto {
		a.fallbacks[ReasonBPFUnavailable].Add(1)
	}
	if a.pktinfo {
		if ifindex, err := PktinfoIfindex(fd, fam); err == nil && ifindex != 0 {
			return ifindex, MethodPktinfo
		}
	}
	a.fallbacks[ReasonUnresolved].Add(1)
	return 0, MethodNone
}

// lookupBPF finds the stamp of fd: in the socket storage, then by the
// socket's cookie. Ifindex 0 and a nil error: not stamped.
func (a *Attributor) lookupBPF(fd int) (uint32, Method, error) {
	st, ok, err := a.maps.LookupFd(fd)
	if err != nil || ok {
		return st.Ifindex, MethodSkStorage, err
	}
	cookie, cerr := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if cerr != nil {
		return 0, MethodNone, cerr
	}
	if st, ok, err = a.maps.LookupCookie(cookie); err != nil || !ok {
		return 0, MethodNone, err
	}
	return st.Ifindex, MethodCookie, nil
}

// Info is what attribution knows about one accepted connection.
type Info struct {
	Ifindex uint32
	Family  bindings.Family
	Device  string // "" when the ifindex is unknown
	Tag     string
	Bound   bool // the interface has a binding; false means the default tag
	Method  Method
	Local   netip.AddrPort // the VIP the client connected to
	Remote  netip.AddrPort
}

// Attribute resolves fd, an accepted socket with the given addresses, to its
// interface and tag.
func (a *Attributor) Attribute(fd int, local, remote netip.AddrPort) Info {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	fam := bindings.FamilyIPv6
	if remote.Addr().Is4() {
		fam = bindings.FamilyIPv4
	}
	ifindex, m := a.Resolve(fd, fam)
	r := a.tags.Lookup(ifindex, fam)
	return Info{Ifindex: ifindex, Family: fam, Device: r.Device, Tag: r.Tag, Bound: r.Bound, Method: m, Local: local, Remote: remote}
}

// Fallbacks returns the count of connections per fallback reason.
func (a *Attributor) Fallbacks() map[string]uint64 {
	out := make(map[string]uint64, numReasons)
	for i := range a.fallbacks {
		out[reasonNames[i]] = a.fallbacks[i].Load()
	}
	return out
}
