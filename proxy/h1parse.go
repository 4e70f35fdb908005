package proxy

import (
	"bytes"
	"net/http"
)

// Strict HTTP/1.1 request parsing (RFC 9112), in place on a byte buffer:
// no allocation, no maps. It decides what the proxy accepts on plaintext
// listeners before net/http sees a byte (see gate.go), with the status codes
// nginx 1.22 answers the same input with. Where net/http is laxer (it
// accepts obs-fold, bare LF, Transfer-Encoding together with
// Content-Length, identical repeated Content-Length, ...), the proxy rejects
// what nginx rejects: a request two parsers frame differently is how
// requests are smuggled. FuzzParseHead checks the parser against
// http.ReadRequest.

// headError is a rejected request head: the status to answer and why.
type headError struct {
	status int
	reason reason
}

func (e *headError) Error() string { return "malformed request: " + reasonText[e.reason] }

// reason says why a request head or body was rejected. The differential
// fuzz test uses it to tell intentional differences from net/http (see
// stricterThanNetHTTP) from bugs.
type reason uint8

const (
	reasonNone          reason = iota
	reasonRequestLine          // not method SP target SP version
	reasonVersion              // HTTP/x.y other than 1.0 and 1.1 (505)
	reasonLineTooLong          // request line longer than the limit (414)
	reasonHeadTooLarge         // head longer than the limit (431)
	reasonBareLF               // a line ended by LF alone
	reasonBareCR               // CR not followed by LF
	reasonObsFold              // a field line starting with whitespace
	reasonFieldName            // empty or non-token field name, or whitespace before the colon
	reasonFieldValue           // control character in a field value
	reasonContentLength        // malformed Content-Length
	reasonDupContentLen        // more than one Content-Length (even identical)
	reasonTEAndCL              // Transfer-Encoding and Content-Length together
	reasonTEVersion            // Transfer-Encoding in an HTTP/1.0 request
	reasonDupTE                // more than one Transfer-Encoding field
	reasonUnknownTE            // Transfer-Encoding other than a single chunked (501)
	reasonHost                 // HTTP/1.1 without Host, several Host, or a malformed one
	reasonLeadingBlank         // more than one empty line before the request line
	reasonChunk                // malformed chunked body (size, extension, CRLF, trailer)
	reasonChunkOverflow        // chunk size that does not fit 63 bits
)

var reasonText = [...]string{
	reasonNone: "", reasonRequestLine: "malformed request line", reasonVersion: "unsupported HTTP version",
	reasonLineTooLong: "request line too long", reasonHeadTooLarge: "request header too large",
	reasonBareLF: "line ended by a bare LF", reasonBareCR: "bare CR", reasonObsFold: "obsolete line folding",
	reasonFieldName: "malformed header field name", reasonFieldValue: "control character in header field value",
	reasonContentLength: "malformed Content-Length", reasonDupContentLen: "more than one Content-Length",
	reasonTEAndCL: "Transfer-Encoding together with Content-Length", reasonTEVersion: "Transfer-Encoding in an HTTP/1.0 request",
	reasonDupTE: "more than one Transfer-Encoding", reasonUnknownTE: "Transfer-Encoding other than chunked",
	reasonHost: "missing, repeated or malformed Host", reasonLeadingBlank: "empty lines before the request line",
	reasonChunk: "malformed chunked body", reasonChunkOverflow: "chunk size overflow",
}

func reject(status int, r reason) *headError { return &headError{status: status, reason: r} }

// maxRequestLine is the longest request line accepted (nginx's
// large_client_header_buffers: 8k, answered with 414).
const maxRequestLine = 8 << 10

// reqHead is a parsed request head; the slices point into the buffer.
type reqHead struct {
	method, target []byte
	minor          int // HTTP/1.minor
	host           []byte
	hasHost        bool
	contentLength  int64 // -1: none
	chunked        bool
	upgrade        bool // an Upgrade field is present
	// fields, when not nil, gets the header field lines appended, name
	// and value (trimmed), in order (the fuzz test compares them); nfields
	// counts them.
	fields  *[][2][]byte
	nfields int
	start   int // offset of the request line (after leading empty lines)
}

const maxFields = 128

// errNeedMore: the buffer does not hold a complete head yet.
var errNeedMore = &headError{}

// tchar is RFC 9110 5.6.2 token characters.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return
}()

// parseHead parses the request head at the start of buf. It returns the
// head's length (through the empty line), errNeedMore when buf does not yet
// hold all of it (and is within limit), or the rejection. limit bounds the
// whole head (request line and fields); the request line alone is bounded
// by min(limit, maxRequestLine) and answered with 414.
func parseHead(buf []byte, limit int, h *reqHead) (int, *headError) {
	fields := h.fields
	if fields != nil {
		*fields = (*fields)[:0]
	}
	*h = reqHead{contentLength: -1, fields: fields}
	// RFC 9112 2.2: one empty line before the request line is ignored
	// (clients once sent a CRLF after a POST body).
	i := 0
	if len(buf) >= 1 && buf[0] == '\r' {
		if len(buf) < 2 {
			return 0, errNeedMore
		}
		if buf[1] != '\n' {
			return 0, reject(400, reasonBareCR)
		}
		i = 2
	} else if len(buf) >= 1 && buf[0] == '\n' {
		return 0, reject(400, reasonBareLF)
	}
	if len(buf) > i && (buf[i] == '\r' || buf[i] == '\n') {
		return 0, reject(400, reasonLeadingBlank)
	}
	h.start = i
	lineLimit := min(limit, maxRequestLine)
	// Request line.
	eol := bytes.IndexByte(buf[i:], '\n')
	if eol < 0 {
		if len(buf)-i > lineLimit {
			return 0, reject(http.StatusRequestURITooLong, reasonLineTooLong)
		}
		return 0, errNeedMore
	}
	if eol > lineLimit {
		return 0, reject(http.StatusRequestURITooLong, reasonLineTooLong)
	}
	line := buf[i : i+eol]
	if len(line) == 0 || line[len(line)-1] != '\r' {
		return 0, reject(400, reasonBareLF)
	}
	line = line[:len(line)-1]
	if e := parseRequestLine(line, h); e != nil {
		return 0, e
	}
	i += eol + 1
	// Field lines.
	nCL, nTE := 0, 0
	var te []byte
	for {
		if i-h.start > limit {
			return 0, reject(http.StatusRequestHeaderFieldsTooLarge, reasonHeadTooLarge)
		}
		eol := bytes.IndexByte(buf[i:], '\n')
		if eol < 0 {
			if len(buf)-h.start > limit {
				return 0, reject(http.StatusRequestHeaderFieldsTooLarge, reasonHeadTooLarge)
			}
			return 0, errNeedMore
		}
		if i+eol+1-h.start > limit {
			return 0, reject(http.StatusRequestHeaderFieldsTooLarge, reasonHeadTooLarge)
		}
		line := buf[i : i+eol]
		if len(line) == 0 || line[len(line)-1] != '\r' {
			return 0, reject(400, reasonBareLF)
		}
		line = line[:len(line)-1]
		i += eol + 1
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return 0, reject(400, reasonObsFold)
		}
		colon := 0
		for colon < len(line) && tchar[line[colon]] {
			colon++
		}
		if colon == 0 || colon == len(line) || line[colon] != ':' {
			if bytes.IndexByte(line, '\r') >= 0 {
				return 0, reject(400, reasonBareCR)
			}
			return 0, reject(400, reasonFieldName)
		}
		name := line[:colon]
		value, r := fieldValue(line[colon+1:])
		if r != reasonNone {
			return 0, reject(400, r)
		}
		if h.nfields++; h.nfields > maxFields {
			return 0, reject(http.StatusRequestHeaderFieldsTooLarge, reasonHeadTooLarge)
		}
		if h.fields != nil {
			*h.fields = append(*h.fields, [2][]byte{name, value})
		}
		switch {
		case len(name) == 14 && asciiEqualFold(name, "Content-Length"):
			nCL++
			if nCL > 1 {
				return 0, reject(400, reasonDupContentLen)
			}
			n, ok := parseContentLength(value)
			if !ok {
				return 0, reject(400, reasonContentLength)
			}
			h.contentLength = n
		case len(name) == 17 && asciiEqualFold(name, "Transfer-Encoding"):
			nTE++
			te = value
		case len(name) == 4 && asciiEqualFold(name, "Host"):
			if h.hasHost {
				return 0, reject(400, reasonHost)
			}
			h.hasHost, h.host = true, value
		case len(name) == 7 && asciiEqualFold(name, "Upgrade"):
			h.upgrade = true
		}
	}
	if nTE > 0 {
		switch {
		case h.minor == 0:
			return 0, reject(400, reasonTEVersion)
		case nTE > 1:
			return 0, reject(400, reasonDupTE)
		case !asciiEqualFold(te, "chunked"):
			return 0, reject(http.StatusNotImplemented, reasonUnknownTE)
		case nCL > 0:
			return 0, reject(400, reasonTEAndCL)
		}
		h.chunked = true
	}
	if h.minor == 1 && !h.hasHost || h.hasHost && !validHost(h.host) {
		return 0, reject(400, reasonHost)
	}
	return i, nil
}

// parseRequestLine: method SP request-target SP HTTP-version, single spaces.
func parseRequestLine(line []byte, h *reqHead) *headError {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return reject(400, reasonRequestLine)
	}
	for _, c := range line[:sp1] {
		if !tchar[c] {
			return reject(400, reasonRequestLine)
		}
	}
	rest := line[sp1+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 {
		return reject(400, reasonRequestLine)
	}
	target, version := rest[:sp2], rest[sp2+1:]
	for _, c := range target {
		if c <= ' ' || c == 0x7f {
			return reject(400, reasonRequestLine)
		}
	}
	if len(version) != 8 || string(version[:5]) != "HTTP/" || version[6] != '.' ||
		!isDigit(version[5]) || !isDigit(version[7]) {
		return reject(400, reasonRequestLine)
	}
	if version[5] != '1' || version[7] > '1' {
		return reject(http.StatusHTTPVersionNotSupported, reasonVersion)
	}
	// A target is origin-form, absolute-form, "*" (OPTIONS) or
	// authority-form (CONNECT, which the proxy does not do: net/http
	// refuses it without a handler of its own).
	switch {
	case target[0] == '/':
	case len(target) == 1 && target[0] == '*' && string(line[:sp1]) == "OPTIONS":
	case hasSchemePrefix(target):
	default:
		return reject(400, reasonRequestLine)
	}
	h.method, h.target, h.minor = line[:sp1], target, int(version[7]-'0')
	return nil
}

func hasSchemePrefix(t []byte) bool {
	return len(t) > 7 && asciiEqualFold(t[:7], "http://") || len(t) > 8 && asciiEqualFold(t[:8], "https://")
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// fieldValue trims OWS and checks field-content: VCHAR, obs-text, SP and
// HTAB only.
func fieldValue(v []byte) ([]byte, reason) {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			if c == '\r' {
				return nil, reasonBareCR
			}
			return nil, reasonFieldValue
		}
	}
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v, reasonNone
}

// parseContentLength: 1*DIGIT, at most 18 digits (no overflow).
func parseContentLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// validHost is net/http's check (httpguts.ValidHostHeader): the characters
// of a reg-name, IP literal and port.
func validHost(h []byte) bool {
	for _, c := range h {
		if c >= 0x80 || !hostChar[c] {
			return false
		}
	}
	return true
}

var hostChar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return
}()

func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c, d := b[i], s[i]
		if c|0x20 != d|0x20 || (c|0x20) < 'a' || (c|0x20) > 'z' {
			if c != d {
				return false
			}
		}
	}
	return true
}
