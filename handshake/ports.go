package handshake

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ListeningPorts returns the local ports of the TCP sockets listening in
// the calling thread's network namespace. It asks the kernel for listening
// sockets only (NETLINK_SOCK_DIAG with a state filter): reading
// /proc/net/tcp instead walks every TCP socket of the namespace, and a host
// serving 20k new connections a second holds 100k+ sockets in TIME_WAIT,
// which made each rescan cost 0.1-0.4 s of CPU. /proc/net/tcp is read only
// where sock_diag is not available.
func ListeningPorts() ([]uint16, error) {
	ports, err := diagListening()
	if err == nil {
		return ports, nil
	}
	if !errors.Is(err, errNoDiag) {
		return nil, err
	}
	return procListening()
}

// procListening reads /proc/net/tcp and tcp6.
func procListening() ([]uint16, error) {
	var ports []uint16
	found := false
	for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		p, err := listening(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return nil, err
		}
		found = true
		ports = append(ports, p...)
	}
	if !found {
		return nil, errors.New("no /proc/net/tcp: cannot find the listening ports")
	}
	return ports, nil
}

// errNoDiag: the kernel has no NETLINK_SOCK_DIAG (or no TCP diag module).
var errNoDiag = errors.New("sock_diag unavailable")

// diagListening dumps the listening TCP sockets of both families over
// NETLINK_SOCK_DIAG (inet_diag_req_v2 with idiag_states = TCPF_LISTEN: the
// kernel walks only its listening hash).
func diagListening() ([]uint16, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoDiag, err)
	}
	defer unix.Close(fd)
	var ports []uint16
	buf := make([]byte, 32<<10)
	for seq, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		p, err := diagDump(fd, uint32(seq+1), fam, buf)
		switch {
		case fam == unix.AF_INET6 && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EAFNOSUPPORT)):
			continue // no IPv6
		case fam == unix.AF_INET && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EOPNOTSUPP)):
			return nil, fmt.Errorf("%w: %w", errNoDiag, err) // no tcp_diag
		case err != nil:
			return nil, fmt.Errorf("listing listening sockets (sock_diag): %w", err)
		}
		ports = append(ports, p...)
	}
	return ports, nil
}

// The size of struct inet_diag_req_v2 (linux/inet_diag.h) and the state
// of a listening TCP socket.
const (
	sizeofInetDiagReqV2 = 56
	tcpListen           = 10 // TCP_LISTEN
)

// diagDump sends one dump request for family fam and collects the source
// ports of the answers.
func diagDump(fd int, seq uint32, fam uint8, buf []byte) ([]uint16, error) {
	req := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], seq)
	r := req[unix.NLMSG_HDRLEN:]
	r[0], r[1] = fam, unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 1<<tcpListen)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, err
	}
	var ports []uint16
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, err
		}
		var done bool
		if ports, done, err = parseDiag(buf[:n], seq, ports); err != nil {
			return nil, err
		}
		if done {
			return ports, nil
		}
	}
}

// listening parses one /proc/net/tcp file: "sl local_address rem_address st ...",
// addresses as HEX:PORT, state 0A is LISTEN.
func listening(file string) ([]uint16, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ports []uint16
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[3] != "0A" {
			continue
		}
		i := strings.LastIndexByte(fields[1], ':')
		if i < 0 {
			continue
		}
		p, err := strconv.ParseUint(fields[1][i+1:], 16, 16)
		if err != nil {
			return nil, fmt.Errorf("%s: bad local address %q", file, fields[1])
		}
		ports = append(ports, uint16(p))
	}
	return ports, sc.Err()
}
