package testenv

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStatusLineAndClosedWithin: StatusLine returns the first line of the
// answer; ClosedWithin sees a close and reports one that does not come.
func TestStatusLineAndClosedWithin(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if i == 0 { // answers the request line, then closes
				line, _ := bufio.NewReader(c).ReadString('\n')
				io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nX: "+strings.TrimSpace(line)+"\r\n\r\n")
				c.Close()
				continue
			}
			<-release // the second stays open
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, err := StatusLine(c, "GET / HTTP/1.1 extra\r\n")
	if err != nil || line != "HTTP/1.1 400 Bad Request" {
		t.Errorf("StatusLine = %q, %v", line, err)
	}
	if _, d, err := ClosedWithin(c, 10*time.Second); err != nil || d > 10*time.Second {
		t.Errorf("ClosedWithin on a closed connection: %v after %v", err, d)
	}
	open, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, _, err := ClosedWithin(open, 50*time.Millisecond); err == nil {
		t.Error("ClosedWithin on an open connection: no error")
	}
	close(release)
}
