package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/ipng/ipng-stats/config"
)

// listenTarget is an address the agent (or the proxy command) would bind.
type listenTarget struct {
	what, addr string
}

// checkListeners binds every address the configuration listens on, all at
// once as the agent does (so that two of them that collide are found), and
// closes them: web.listen_address and, when the proxy is enabled, each
// proxy listener. An address held by a running ipng-stats is a warning.
func checkListeners(w io.Writer, cfg *config.Config) (ok bool) {
	targets := []listenTarget{{"web", cfg.Web.ListenAddress}}
	if cfg.Proxy.Enabled {
		for _, l := range cfg.Proxy.Listeners {
			targets = append(targets, listenTarget{"proxy listener", l.Address})
		}
	} else if len(cfg.Proxy.Listeners) > 0 {
		fmt.Fprintln(w, "skip  proxy listeners: proxy.enabled is false (the agent does not bind them; `ipng-stats proxy` does)")
	}
	ok = true
	var (
		bound     []net.Listener
		boundAddr []listenTarget
	)
	defer func() {
		for _, l := range bound {
			l.Close()
		}
	}()
	for _, t := range targets {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		l, err := lc.Listen(context.Background(), "tcp", t.addr)
		if err == nil {
			bound = append(bound, l)
			boundAddr = append(boundAddr, t)
			fmt.Fprintf(w, "ok    %s %s: can be bound\n", t.what, t.addr)
			continue
		}
		why, fatal := bindFailure(t.addr, err, boundAddr)
		if fatal {
			fmt.Fprintf(w, "FAIL  %s %s: %s\n", t.what, t.addr, why)
			ok = false
		} else {
			fmt.Fprintf(w, "warn  %s %s: %s\n", t.what, t.addr, why)
		}
	}
	return ok
}

// bindFailure explains why addr could not be bound (bound: what this check
// holds at the moment). An address held by a running ipng-stats is not
// fatal: that is the agent this check is for.
func bindFailure(addr string, err error, bound []listenTarget) (why string, fatal bool) {
	_, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(portStr)
	switch {
	case errors.Is(err, syscall.EACCES):
		start := "1024"
		if b, rerr := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); rerr == nil {
			start = strings.TrimSpace(string(b))
		}
		return fmt.Sprintf("permission denied: ports below %s (net.ipv4.ip_unprivileged_port_start) need CAP_NET_BIND_SERVICE", start), true
	case errors.Is(err, syscall.EADDRINUSE):
		for _, t := range bound {
			if strings.HasSuffix(t.addr, ":"+portStr) {
				return fmt.Sprintf("address in use; it overlaps %s %s of this configuration", t.what, t.addr), true
			}
		}
		pid, name := portOwner(port)
		switch {
		case name == "ipng-stats":
			return fmt.Sprintf("in use by a running ipng-stats (pid %d)", pid), false
		case pid != 0:
			return fmt.Sprintf("address in use by %s (pid %d)", name, pid), true
		default:
			return "address in use (by a process not visible here)", true
		}
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "address not available: no interface of this host has it", true
	}
	return err.Error(), true
}

// portOwner finds the process listening on TCP port in this network
// namespace: the socket's inode from /proc/net/tcp{,6}, then the process
// holding it among /proc/*/fd. It returns 0 when it is not visible (another
// user's process without CAP_SYS_PTRACE, or a race).
func portOwner(port int) (pid int, name string) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		listeningInodes(f, port, inodes)
	}
	if len(inodes) == 0 {
		return 0, ""
	}
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		link, err := os.Readlink(fd)
		if err != nil || !strings.HasPrefix(link, "socket:[") {
			continue
		}
		if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			dir := filepath.Dir(filepath.Dir(fd))
			pid, _ = strconv.Atoi(filepath.Base(dir))
			comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
			return pid, strings.TrimSpace(string(comm))
		}
	}
	return 0, ""
}

// listeningInodes adds the inodes of the sockets in LISTEN state (0A) on
// port from a /proc/net/tcp-format file.
func listeningInodes(file string, port int, inodes map[string]bool) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" {
			continue
		}
		i := strings.LastIndexByte(fields[1], ':')
		if p, err := strconv.ParseUint(fields[1][i+1:], 16, 16); err == nil && int(p) == port {
			inodes[fields[9]] = true
		}
	}
}
