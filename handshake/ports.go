package handshake

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ListeningPorts returns the local ports of the TCP sockets listening in
// the calling thread's network namespace (/proc/net/tcp and tcp6).
func ListeningPorts() ([]uint16, error) {
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
