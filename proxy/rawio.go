package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawConn reads and writes a non-blocking socket with raw system calls,
// waiting through Go's netpoller (syscall.RawConn) only when a call would
// block. A raw call does not tell the runtime it is in a system call: on
// a socket that never blocks that is what nginx does, and it spares the
// runtime's bookkeeping and, above all, sysmon handing the P to another
// thread (a futex wake-up and a context switch) when a loopback write
// spends a few tens of microseconds in the kernel delivering to its peer.
// Deadlines and Close work as on the net.Conn: RawConn.Read and Write
// return their errors.
type rawConn struct {
	rc    syscall.RawConn
	p     []byte // read into
	iov   [4]unix.Iovec
	iovs  []unix.Iovec // still to write
	n     int
	errno syscall.Errno

	readFn, writeFn func(uintptr) bool
}

func newRawConn(c net.Conn) *rawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawConn{rc: rc}
	r.readFn = r.readOnce
	r.writeFn = r.writeOnce
	return r
}

func (r *rawConn) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// read is net.Conn.Read.
func (r *rawConn) read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.rc.Read(r.readFn)
	r.p = nil
	switch {
	case err != nil:
		return 0, netClosed(err)
	case r.errno != 0:
		return 0, os.NewSyscallError("read", r.errno)
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

func (r *rawConn) writeOnce(fd uintptr) bool {
	for len(r.iovs) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&r.iovs[0])), uintptr(len(r.iovs)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		case 0:
		default:
			r.errno = e
			return true
		}
		r.n += int(n)
		for n > 0 {
			if l := uintptr(r.iovs[0].Len); n >= l {
				n -= l
				r.iovs = r.iovs[1:]
				continue
			}
			r.iovs[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(r.iovs[0].Base), n))
			r.iovs[0].Len -= uint64(n)
			n = 0
		}
	}
	return true
}

// writev writes all of bufs (at most 4) with writev, as net.Buffers.WriteTo
// does, and returns how many bytes it wrote.
func (r *rawConn) writev(bufs ...[]byte) (int, error) {
	r.iovs = r.iov[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			r.iovs = append(r.iovs, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
		}
	}
	if len(r.iovs) == 0 {
		return 0, nil
	}
	r.n, r.errno = 0, 0
	err := r.rc.Write(r.writeFn)
	r.iovs = nil
	clear(r.iov[:])
	if err == nil && r.errno != 0 {
		err = os.NewSyscallError("writev", r.errno)
	}
	return r.n, netClosed(err)
}

// netClosed: a closed *os.File (rawaccept.go) says os.ErrClosed from its
// Read and Write, and internal/poll's unexported ErrFileClosing ("use of
// closed file") from its SyscallConn, where a closed net.Conn says
// net.ErrClosed, which the loop's callers look for (an accept loop ends,
// a client's read ends as 499, not as 400).
func netClosed(err error) error {
	if err != nil && (errors.Is(err, os.ErrClosed) || errors.Is(err, errFileClosing())) {
		return net.ErrClosed
	}
	return err
}

// errFileClosing is the error a closed *os.File's SyscallConn returns,
// taken once from a closed pipe (the package that declares it cannot be
// imported); nil if no pipe could be made, which matches no error.
var errFileClosing = sync.OnceValue(func() error {
	r, w, err := os.Pipe()
	if err != nil {
		return nil
	}
	w.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		r.Close()
		return nil
	}
	r.Close()
	return rc.Control(func(uintptr) {})
})

// writeBuffers writes bufs to w with one writev where w can (net.Buffers),
// for sockets without rawConn (TLS, no descriptor). It copies the list:
// handing bufs itself to net.Buffers would make every caller's variadic
// array escape, an allocation per write on the raw path too.
func writeBuffers(w io.Writer, bufs [][]byte) (int, error) {
	nb := append(net.Buffers(nil), bufs...)
	n, err := nb.WriteTo(w)
	return int(n), err
}
