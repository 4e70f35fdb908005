package httpstats

import (
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ipng/ipng-stats/collector"
)

// writer captures the status a handler sends. For HTTP/1 one writer lives
// in each Conn and is reused; for HTTP/2 it also counts body bytes.
type writer struct {
	http.ResponseWriter
	req      *http.Request
	status   int
	upstream string
	body     uint64 // HTTP/2 only
}

func (w *writer) WriteHeader(code int) {
	if w.status == 0 || (w.status < 200 && code >= 200) || w.status == http.StatusContinue {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *writer) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.body += uint64(n)
	return n, err
}

// ReadFrom keeps net/http's sendfile path.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var (
		n   int64
		err error
	)
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(r)
	} else {
		n, err = io.Copy(struct{ io.Writer }{w.ResponseWriter}, r)
	}
	w.body += uint64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush, Hijack and deadlines.
func (w *writer) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush implements http.Flusher for handlers that assert it directly.
func (w *writer) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// SetUpstream notes the upstream that served the request, for the access
// log. w is the ResponseWriter the handler was given; it does nothing for
// requests that are not recorded.
func SetUpstream(w http.ResponseWriter, addr string) {
	for range 8 {
		switch v := w.(type) {
		case *writer:
			v.upstream = addr
			return
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return
		}
	}
}

// countingBody counts the request body bytes read by an HTTP/2 handler.
type countingBody struct {
	io.ReadCloser
	n atomic.Uint64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(uint64(n))
	return n, err
}

// headerBytes is the RFC 7541 size of the fields: name, value and 32 each.
func headerBytes(h http.Header) uint64 {
	var n uint64
	for k, vs := range h {
		for _, v := range vs {
			n += uint64(len(k) + len(v) + 32)
		}
	}
	return n
}

func serveH2(c *Conn, h http.Handler, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	c.series.AddWriting(1)
	var body *countingBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &countingBody{ReadCloser: r.Body}
		r.Body = body
	}
	rw := &writer{ResponseWriter: w, req: r}
	defer func() {
		c.series.AddWriting(-1)
		// pseudo-headers :method, :scheme, :authority, :path
		req := headerBytes(r.Header) + uint64(len(r.Method)+len(r.Host)+len(r.URL.RequestURI())+5+4*32)
		if body != nil {
			req += body.n.Load()
		}
		status := rw.status
		if status == 0 {
			status = http.StatusOK
		}
		resp := headerBytes(w.Header()) + 3 + 32 + rw.body
		now := time.Now()
		o := collector.Outcome{Status: status, RequestBytes: req, ResponseBytes: resp, Duration: now.Sub(start)}
		c.series.Record(o)
		c.st.log(c, r, rw.upstream, now, o)
	}()
	h.ServeHTTP(rw, r)
}
