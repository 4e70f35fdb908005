package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"syscall"
)

// Who failed: a request that does not complete failed either on the
// client's side (its body is malformed, it went away, it was too slow) or
// on the upstream's. Only the upstream's failures count against a server
// (max_fails), like nginx and HAProxy: a client must never be able to take
// the servers out. The side is recorded where the error happens (reading
// the client's body, or talking to the upstream), not guessed from error
// texts afterwards.

// clientBody is the request body as the upstream side reads it. It records
// how much was read (a request whose body was partly sent cannot be sent
// again) and the first error reading from the client. The Transport reads
// it on its own goroutine, hence the atomics.
type clientBody struct {
	rc  io.ReadCloser
	n   atomic.Int64
	err atomic.Pointer[error]
}

func (cb *clientBody) Read(p []byte) (int, error) {
	n, err := cb.rc.Read(p)
	cb.n.Add(int64(n))
	if err != nil && err != io.EOF {
		cb.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (cb *clientBody) Close() error { return cb.rc.Close() }

// wrapBody puts a clientBody in place of r's body; bodyless requests keep
// theirs (http.NoBody tells the Transport there is nothing to send).
func wrapBody(r *http.Request) *clientBody {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	cb := &clientBody{rc: r.Body}
	r.Body = cb
	return cb
}

func bodyOf(r *http.Request) *clientBody {
	cb, _ := r.Body.(*clientBody)
	return cb
}

// clientErr returns the error reading from the client, if there was one.
func (cb *clientBody) clientErr() error {
	if cb == nil {
		return nil
	}
	if p := cb.err.Load(); p != nil {
		return *p
	}
	return nil
}

// consumed reports whether part of the body has been read (and so possibly
// sent): such a request cannot be replayed.
func (cb *clientBody) consumed() bool { return cb != nil && cb.n.Load() > 0 }

// clientStatus is what a client whose request could not be read gets:
// 408 when it was too slow (timeouts.request), 499 when it went away
// (gone: its request's context is done, as net/http does on a failed read
// of the connection or an HTTP/2 stream reset), 400 when its body's framing
// is malformed (chunk sizes, line endings).
func clientStatus(err error, gone bool) int {
	var ne net.Error
	switch {
	case errors.Is(err, errBadChunk):
		// The gate's verdict: net/http cancels the request's context on
		// any connection read error, but this client is not gone.
		return http.StatusBadRequest
	case errors.As(err, &ne) && ne.Timeout():
		return http.StatusRequestTimeout
	case gone, errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return StatusClientClosed
	default:
		return http.StatusBadRequest
	}
}

// staleConnError is a failure on a reused idle upstream connection before
// any byte of the response arrived that could not be retried (the request
// is not idempotent, or its body was partly sent): the server most likely
// closed the connection while it was idle. It gives 502 but is not charged
// to the server.
type staleConnError struct{ err error }

func (e *staleConnError) Error() string { return "reused upstream connection closed: " + e.err.Error() }
func (e *staleConnError) Unwrap() error { return e.err }

// replayable reports whether r may be sent again after a failure on a
// reused connection before any response byte (Go's Transport rules): its
// body was not consumed and it is idempotent (RFC 9110 9.2.2, or carries an
// Idempotency-Key), or nothing of it reached the connection.
func replayable(r *http.Request, cb *clientBody, nothingWritten bool) bool {
	if cb.consumed() {
		return false
	}
	if nothingWritten {
		return true
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	_, k1 := r.Header["Idempotency-Key"]
	_, k2 := r.Header["X-Idempotency-Key"]
	return k1 || k2
}

// connTrace follows a ReverseProxy request's upstream connection: whether
// it was reused and whether a response byte arrived. It also keeps the
// client's request: ReverseProxy's ErrorHandler is given its outgoing one.
type connTrace struct {
	in              *http.Request
	reused, gotByte atomic.Bool
}

type traceKey struct{}

// traced returns r with a client trace recording into a connTrace.
func traced(r *http.Request) *http.Request {
	ct := &connTrace{}
	ctx := context.WithValue(r.Context(), traceKey{}, ct)
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn:              func(i httptrace.GotConnInfo) { ct.reused.Store(i.Reused) },
		GotFirstResponseByte: func() { ct.gotByte.Store(true) },
	})
	ct.in = r.WithContext(ctx)
	return ct.in
}

func traceOf(r *http.Request) *connTrace {
	ct, _ := r.Context().Value(traceKey{}).(*connTrace)
	return ct
}

// staleOnReuse reports whether err is a ReverseProxy failure on a reused
// connection before any response byte (what the Transport could not retry
// itself).
func staleOnReuse(r *http.Request, err error) bool {
	ct := traceOf(r)
	return ct != nil && ct.reused.Load() && !ct.gotByte.Load() && !isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
