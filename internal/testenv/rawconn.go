package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// rawTimeout bounds the reads of StatusLine.
const rawTimeout = 20 * time.Second

// StatusLine writes req on c (plain or TLS) and returns the first line of
// the answer without its line end, reading for at most 20 s: what a hostile
// client's request got. It does not close c.
func StatusLine(c net.Conn, req string) (string, error) {
	c.SetDeadline(time.Now().Add(rawTimeout))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, req); err != nil {
		return "", fmt.Errorf("sending %.40q: %w", req, err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return strings.TrimSpace(line), fmt.Errorf("reading the answer to %.40q: %w", req, err)
	}
	return strings.TrimSpace(line), nil
}

// ClosedWithin reads c until the peer closes it (EOF or a reset), for at
// most limit. It returns what was read and how long the close took, and an
// error if c is still open at limit. Safe to call from any goroutine.
func ClosedWithin(c net.Conn, limit time.Duration) ([]byte, time.Duration, error) {
	start := time.Now()
	c.SetReadDeadline(start.Add(limit))
	b, err := io.ReadAll(c)
	d := time.Since(start)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return b, d, fmt.Errorf("not closed by the peer within %v", limit)
	}
	return b, d, nil
}
