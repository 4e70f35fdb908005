package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// stricterThanNetHTTP are the rejections where the proxy is intentionally
// stricter than net/http's http.ReadRequest, which accepts these: nginx
// rejects them too, and each lets two parsers frame a request differently.
var stricterThanNetHTTP = map[reason]string{
	reasonDupContentLen: "repeated identical Content-Length: net/http keeps one (RFC 9110 8.6 allows either); nginx rejects",
	reasonTEAndCL:       "Transfer-Encoding with Content-Length: net/http drops the length; nginx rejects (RFC 9112 6.1: ought to be an error) — CL.TE/TE.CL smuggling",
	reasonTEVersion:     "Transfer-Encoding in HTTP/1.0: net/http honours it; nginx rejects (RFC 9112 6.1)",
	reasonObsFold:       "obs-fold: net/http unfolds it; RFC 9112 5.2 lets a server reject it, nginx does",
	reasonBareLF:        "bare LF as a line end in the head: net/http accepts it (RFC 9112 2.2 MAY); rejected for strict line ends",
	reasonFieldName:     "whitespace between a field name and its colon: net/http accepts \"X : b\"; RFC 9112 5.1 MUST reject, nginx does",
	reasonHost:          "Host: http.ReadRequest checks neither presence, count nor syntax (net/http's server does, after it)",
	reasonVersion:       "versions other than 1.0 and 1.1 (HTTP/0.9, 1.2, 2.0 on a request line): http.ReadRequest accepts them; nginx answers 505",
	reasonRequestLine:   "\"*\" as the target of a method other than OPTIONS: net/http accepts it",
	reasonLineTooLong:   "the request line is bounded at 8 KiB (nginx's 414); net/http bounds only the whole head",
	reasonHeadTooLarge:  "the head is bounded at the limit exactly and at 128 fields; net/http allows 4 KiB of slack",
	reasonChunk:         "control characters in a chunk extension: net/http accepts them",
	reasonChunkOverflow: "chunk sizes of 16 hex digits beyond 63 bits",
}

// parseRequest is the whole-request view of parseHead and chunkState, for
// the comparison with net/http: the head, and the body and its length.
func parseRequest(in []byte, limit int) (h reqHead, body []byte, n int, e *headError) {
	h.fields = new([][2][]byte)
	hl, e := parseHead(in, limit, &h)
	if e != nil {
		return h, nil, 0, e
	}
	rest := in[hl:]
	switch {
	case h.chunked:
		var cs chunkState
		k, done, r := cs.feed(rest, &body)
		if r != reasonNone {
			return h, nil, 0, reject(400, r)
		}
		if !done {
			return h, nil, 0, errNeedMore
		}
		return h, body, hl + k, nil
	case h.contentLength > 0:
		if int64(len(rest)) < h.contentLength {
			return h, nil, 0, errNeedMore
		}
		return h, rest[:h.contentLength], hl + int(h.contentLength), nil
	}
	return h, nil, hl, nil
}

// FuzzParseHead: parseHead and chunkState against http.ReadRequest. For
// every input, either both reject it, or both accept it with the same
// method, target, header fields (names, values, order within a name),
// framing (chunked or Content-Length) and body; a rejection only the proxy
// makes must name a reason in stricterThanNetHTTP; the proxy never accepts
// what net/http rejects.
func FuzzParseHead(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /x?y=1 HTTP/1.0\r\n\r\n",
		"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\nHost: a\n\n",
		"GET http://h/p HTTP/1.1\r\nHost: h\r\n\r\n",
		"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: [::1]:80\r\nA: 1\r\nA: 2\r\nb: x y\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: b\x01\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 ;a\r\nx\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 4096
		h, body, n, e := parseRequest(in, limit)
		if e == errNeedMore {
			// Incomplete: net/http must not have a complete request either
			// (it may reject early, which is fine).
			if req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in))); err == nil {
				if _, err := io.ReadAll(req.Body); err == nil && !strings.Contains(string(in), "\n\n") {
					t.Fatalf("proxy needs more, net/http read a whole request from %q", in)
				}
			}
			return
		}
		// The gate drops an empty line before the request line (RFC 9112
		// 2.2) before net/http reads: compare what net/http reads.
		br := bufio.NewReaderSize(bytes.NewReader(in[h.start:]), 2*limit)
		req, err := http.ReadRequest(br)
		var gbody []byte
		if err == nil {
			gbody, err = io.ReadAll(req.Body)
		}
		if e != nil {
			if err == nil {
				if _, ok := stricterThanNetHTTP[e.reason]; !ok {
					t.Fatalf("proxy rejects %q (%v), net/http accepts it", in, e)
				}
			}
			return
		}
		if err != nil {
			// The head was accepted: net/http may only fail where it reads
			// beyond it in a way the proxy did not (never: the framing is
			// the same).
			t.Fatalf("proxy accepts %q (method %q target %q), net/http rejects it: %v", in, h.method, h.target, err)
		}
		if req.Method != string(h.method) || req.RequestURI != string(h.target) || req.ProtoMinor != h.minor {
			t.Fatalf("%q: net/http %s %s 1.%d, proxy %s %s 1.%d", in, req.Method, req.RequestURI, req.ProtoMinor, h.method, h.target, h.minor)
		}
		if h.chunked != (len(req.TransferEncoding) == 1) || !h.chunked && req.ContentLength != max(h.contentLength, 0) {
			t.Fatalf("%q: framing: net/http TE %q CL %d, proxy chunked %v CL %d", in, req.TransferEncoding, req.ContentLength, h.chunked, h.contentLength)
		}
		if !bytes.Equal(body, gbody) {
			t.Fatalf("%q: body: net/http %q, proxy %q", in, gbody, body)
		}
		if used := len(in) - br.Buffered(); !h.chunked && used != n {
			// net/http's chunked reader may read ahead; with a length,
			// both stop at the same byte.
			t.Fatalf("%q: net/http consumed %d bytes, proxy %d", in, used, n)
		}
		// Header fields: net/http canonicalises names and lifts Host out.
		got := http.Header{}
		for _, f := range *h.fields {
			k := http.CanonicalHeaderKey(string(f[0]))
			if k == "Host" {
				continue
			}
			got[k] = append(got[k], string(f[1]))
		}
		// With an absolute-form target the host is the target's (RFC 9112
		// 3.2.2), which net/http puts in req.Host; the gate needs only the
		// Host field's syntax.
		if h.hasHost && !hasSchemePrefix(h.target) && req.Host != string(h.host) {
			t.Fatalf("%q: Host: net/http %q, proxy %q", in, req.Host, h.host)
		}
		want := req.Header.Clone()
		if h.chunked {
			// net/http removes Transfer-Encoding into req.TransferEncoding.
			delete(got, "Transfer-Encoding")
		}
		delete(want, "Host")
		for k, vs := range got {
			if strings.Join(vs, "\x00") != strings.Join(want[k], "\x00") {
				t.Fatalf("%q: header %s: net/http %q, proxy %q", in, k, want[k], vs)
			}
			delete(want, k)
		}
		if len(want) != 0 {
			t.Fatalf("%q: net/http has headers the proxy has not: %q", in, want)
		}
	})
}
