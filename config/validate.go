package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ipng/ipng-stats/bindings"
)

// validator checks a decoded Config. pos (may be nil) gives the file
// position of each path; paths in bad failed to decode and were already
// reported, so problems at or below them are not reported again; paths in
// below have such a path inside them.
type validator struct {
	file  string
	pos   map[string]position
	bad   map[string]bool
	below map[string]bool
	errs  []error
}

func (v *validator) config(c *Config) {
	v.oneOf("log.level", c.Log.Level, "level", "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "format", "logfmt", "json")
	v.listenAddress("web.listen_address", c.Web.ListenAddress)
	v.cgroup("bpf.cgroup", c.BPF.Cgroup)
	v.pinDir("bpf.pin_dir", c.BPF.PinDir)
	v.mapEntries("bpf.cookie_map_entries", c.BPF.CookieMapEntries)
	v.mapEntries("bpf.tuple_map_entries", c.BPF.TupleMapEntries)
	v.oneOf("attribution.mode", c.Attribution.Mode, "mode", "auto", "bpf", "fallback")
	if err := bindings.ValidateTag(c.Bindings.DefaultTag); err != nil {
		v.errorf("bindings.default_tag", "%v", err)
	}
	if d := c.Bindings.RescanInterval; d < MinRescanInterval {
		v.errorf("bindings.rescan_interval", "must be at least %v, got %v (periodic rescans cannot be turned off)", MinRescanInterval, d)
	}
	v.devices(c.Bindings.Devices)
	if c.Metrics.MaxSeries < 1 {
		v.errorf("metrics.max_series", "must be at least 1, got %d", c.Metrics.MaxSeries)
	}
	v.buckets("metrics.duration_buckets", c.Metrics.DurationBuckets)
	v.buckets("metrics.size_buckets", c.Metrics.SizeBuckets)
	v.nginx(&c.Nginx)
	v.proxy(&c.Proxy)
	v.handshakes(&c.Handshakes)
}

func (v *validator) handshakes(h *HandshakesConfig) {
	if len(h.Ports) > MaxHandshakePorts {
		v.errorf("handshakes.ports", "at most %d ports, got %d", MaxHandshakePorts, len(h.Ports))
	}
	seen := map[int]bool{}
	for i, p := range h.Ports {
		path := fmt.Sprintf("handshakes.ports[%d]", i)
		switch {
		case p < 1 || p > 65535:
			v.errorf(path, "must be a TCP port (1 to 65535), got %d", p)
		case seen[p]:
			v.errorf(path, "duplicate port %d", p)
		}
		seen[p] = true
	}
	if d := h.PortsRescanInterval; d < MinRescanInterval {
		v.errorf("handshakes.ports_rescan_interval", "must be at least %v, got %v", MinRescanInterval, d)
	}
	if d := h.DiagnoseInterval; d < MinRescanInterval {
		v.errorf("handshakes.diagnose_interval", "must be at least %v, got %v", MinRescanInterval, d)
	}
}

func (v *validator) oneOf(path, value, what string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	v.errorf(path, "unknown %s %s (want %s)", what, quote(value), orList(allowed))
}

func (v *validator) listenAddress(path, addr string) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			err = errors.New(ae.Err)
		}
		v.errorf(path, "invalid address %s: %v (want host:port, e.g. \":9113\" or \"[::1]:9113\")", quote(addr), err)
		return
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		v.errorf(path, "invalid port %s in %s (want a number from 0 to 65535)", quote(port), quote(addr))
	}
}

func (v *validator) cgroup(path, dir string) {
	if strings.ContainsRune(dir, 0) {
		v.errorf(path, "contains a NUL byte")
		return
	}
	if dir == "" || filepath.IsAbs(dir) {
		return
	}
	if c := filepath.Clean(dir); c == ".." || strings.HasPrefix(c, "../") {
		v.errorf(path, "relative path %s leaves the cgroup2 mount (use an absolute path instead)", quote(dir))
	}
}

func (v *validator) pinDir(path, dir string) {
	switch {
	case dir == "":
		v.errorf(path, "must not be empty (default /sys/fs/bpf/ipng-stats)")
	case strings.ContainsRune(dir, 0):
		v.errorf(path, "contains a NUL byte")
	case !filepath.IsAbs(dir):
		v.errorf(path, "must be an absolute path, got %s", quote(dir))
	case hasDotDot(dir):
		v.errorf(path, "must not contain \"..\": %s is %s, which may leave the bpf filesystem; write the path it means", quote(dir), quote(filepath.Clean(dir)))
	case filepath.Clean(dir) == "/" || filepath.Clean(dir) == "/sys/fs/bpf":
		v.errorf(path, "must be a directory of its own below the bpf filesystem, e.g. /sys/fs/bpf/ipng-stats; got %s", quote(dir))
	}
}

// hasDotDot reports whether a slash-separated path has a ".." element.
func hasDotDot(p string) bool {
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return true
		}
	}
	return false
}

func (v *validator) mapEntries(path string, n uint32) {
	if n < MinMapEntries || n > MaxMapEntries {
		v.errorf(path, "%s", mapEntriesRange(int64(n)))
	}
}

func mapEntriesRange(n int64) string {
	return fmt.Sprintf("must be between %d and %d, got %d", MinMapEntries, MaxMapEntries, n)
}

// devices checks each binding and rejects a (device, family) pair bound
// twice. "any" and a specific family on one device may coexist.
func (v *validator) devices(devs []DeviceBinding) {
	type key struct {
		dev string
		fam bindings.Family
	}
	seen := make(map[key]int, len(devs))
	for i, b := range devs {
		p := devicePath(i)
		devOK := true
		if b.Device == "" {
			v.errorf(p+".device", "missing (every entry needs a device name)")
			devOK = false
		} else if err := bindings.ValidateDevice(b.Device); err != nil {
			v.errorf(p+".device", "%v", err)
			devOK = false
		}
		fam, err := bindings.ParseFamily(b.Family)
		if err != nil {
			v.errorf(p+".family", "%v", err)
		}
		if b.Tag != "" {
			if err := bindings.ValidateTag(b.Tag); err != nil {
				v.errorf(p+".tag", "%v", err)
			}
		} else if devOK {
			if err := bindings.ValidateTag(b.Device); err != nil {
				v.errorf(p+".tag", "not set, and the device name is not usable as one: %v; set tag explicitly", err)
			}
		}
		if !devOK || err != nil || v.taintedBelow(p) {
			continue
		}
		k := key{b.Device, fam}
		if j, dup := seen[k]; dup {
			where := "by " + devicePath(j)
			if devs[j].Line > 0 {
				where = fmt.Sprintf("at line %d", devs[j].Line)
			}
			v.errorf(p, "device %s family %s already bound %s", quote(b.Device), fam, where)
			continue
		}
		seen[k] = i
	}
}

// buckets checks histogram boundaries: at least one and at most
// MaxBuckets, finite, positive, strictly increasing.
func (v *validator) buckets(path string, bs []float64) {
	if len(bs) == 0 {
		v.errorf(path, "must list at least one bucket boundary")
		return
	}
	if len(bs) > MaxBuckets {
		v.errorf(path, "lists %d boundaries, at most %d are allowed (each one is a series per source_tag and vip)", len(bs), MaxBuckets)
		return
	}
	prev, havePrev := 0.0, false
	for i, b := range bs {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case math.IsNaN(b) || math.IsInf(b, 0):
			v.errorf(p, "must be a finite number, got %g (the +Inf bucket is always added)", b)
			continue
		case b <= 0:
			v.errorf(p, "must be greater than 0, got %g", b)
			continue
		case havePrev && b <= prev:
			v.errorf(p, "%g is not greater than the previous boundary %g (boundaries must be strictly increasing)", b, prev)
		}
		prev, havePrev = b, true
	}
}

// errorf records a problem with the value at path, unless path or one of
// its parents failed to decode.
func (v *validator) errorf(path, format string, args ...any) {
	for p := path; ; p = parentPath(p) {
		if v.bad[p] {
			return
		}
		if p == "" {
			break
		}
	}
	p := v.at(path)
	v.errs = append(v.errs, &Error{File: v.file, Line: p.line, Column: p.col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// taintedBelow reports whether path or anything below it failed to decode.
func (v *validator) taintedBelow(path string) bool {
	return v.bad[path] || v.below[path]
}

// at returns the position of path, or of its nearest parent with one.
func (v *validator) at(path string) position {
	for p := path; p != ""; p = parentPath(p) {
		if pos, ok := v.pos[p]; ok {
			return pos
		}
	}
	return position{}
}

// parentPath is the path containing p: "a.b[2]" for "a.b[2].c", "" at the top.
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}
