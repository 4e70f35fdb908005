package nginxlog

import (
	"bytes"
	"net/netip"
	"time"
	"unsafe"
)

// Record is one parsed access-log line. Byte slices alias the line.
type Record struct {
	Local, Remote netip.AddrPort // $server_addr:$server_port, $remote_addr:$remote_port
	Status        int            // $status
	RequestBytes  uint64         // $request_length
	ResponseBytes uint64         // $bytes_sent
	RequestTime   time.Duration  // $request_time
	ConnTime      time.Duration  // $connection_time; -1 if absent
	Msec          int64          // $msec in ms since the epoch; 0 if absent
	Conn          uint64         // $connection (serial number); 0 if absent
	Host          []byte         // $host, still JSON-escaped
}

// Problem is why a line was rejected.
type Problem uint8

// Problems, each counted as ipng_outcomes_rejected_total{reason}.
const (
	OK           Problem = iota
	Malformed            // not a flat JSON object of strings and numbers
	MissingField         // a required key is absent
	BadAddress           // an address or port does not parse
	BadNumber            // a status, length or time does not parse
	TooLong              // longer than nginx.max_line_bytes
	Torn                 // the start of a line cut short, glued to the next line
	numProblems
)

// Reason is the label value of p in ipng_outcomes_rejected_total.
func (p Problem) Reason() string {
	switch p {
	case Malformed:
		return "nginx_malformed"
	case MissingField:
		return "nginx_missing_field"
	case BadAddress:
		return "nginx_bad_address"
	case BadNumber:
		return "nginx_bad_number"
	case TooLong:
		return "nginx_too_long"
	case Torn:
		return "nginx_torn"
	}
	return "ok"
}

// Field bits of the required keys.
const (
	fServerAddr = 1 << iota
	fServerPort
	fRemoteAddr
	fRemotePort
	fStatus
	fRequestLength
	fBytesSent
	fRequestTime
	fRequired = 1<<iota - 1
)

// Parse parses one line (without its newline) into r. It does not allocate.
// Keys may come in any order; unknown keys are skipped; values are JSON
// strings or numbers (numbers may be quoted, as in the shipped log_format).
//
// It is a scanner over the shipped format: the key expected next (the
// snippet's order, keyTokens) is matched with one comparison, and only
// other keys are scanned and looked up; FuzzParse checks that it answers
// exactly as a generic scan of the same object would.
func Parse(line []byte, r *Record) Problem {
	*r = Record{ConnTime: -1}
	var la, ra netip.Addr
	var lp, rp uint64
	seen := 0
	next := 0 // index in keyTokens of the key expected next
	i := skipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return Malformed
	}
	i = skipSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		return checkEnd(line, i+1, MissingField)
	}
	for {
		var (
			f field
			j int
		)
		if next < len(keyTokens) && bytes.HasPrefix(line[i:], keyTokens[next]) {
			f, j = field(next+1), i+len(keyTokens[next])
			next++
		} else {
			key, k, ok := scanString(line, i)
			if !ok {
				return Malformed
			}
			if f, j = fieldOf(key), k; f != fieldUnknown {
				next = int(f) // the one after f
			}
		}
		j = skipSpace(line, j)
		if j >= len(line) || line[j] != ':' {
			return Malformed
		}
		j = skipSpace(line, j+1)
		val, after, ok := scanValue(line, j)
		if !ok {
			return Malformed
		}
		if f != fieldUnknown {
			if p := r.set(f, val, &seen, &la, &ra, &lp, &rp); p != OK {
				return p
			}
		}
		i = skipSpace(line, after)
		if i >= len(line) {
			return Malformed
		}
		if line[i] == '}' {
			break
		}
		if line[i] != ',' {
			return Malformed
		}
		i = skipSpace(line, i+1)
	}
	if p := checkEnd(line, i+1, OK); p != OK {
		return p
	}
	if seen != fRequired {
		return MissingField
	}
	if lp > 65535 || rp > 65535 {
		return BadAddress
	}
	r.Local = netip.AddrPortFrom(la, uint16(lp))
	r.Remote = netip.AddrPortFrom(ra, uint16(rp))
	return OK
}

// field is a key Parse reads; field(i+1) is fieldOrder()[i].
type field uint8

const (
	fieldUnknown field = iota
	fieldServerAddr
	fieldServerPort
	fieldRemoteAddr
	fieldRemotePort
	fieldStatus
	fieldRequestLength
	fieldBytesSent
	fieldRequestTime
	fieldConnectionTime
	fieldMsec
	fieldConnection
	fieldHost
)

// keyTokens are the snippet's keys in order, each with its quotes.
var keyTokens = func() [][]byte {
	var out [][]byte
	for _, k := range fieldOrder() {
		out = append(out, []byte(`"`+k+`"`))
	}
	return out
}()

// fieldOf is the field of a key (without quotes, escapes left in).
func fieldOf(key []byte) field {
	switch string(key) {
	case "server_addr":
		return fieldServerAddr
	case "server_port":
		return fieldServerPort
	case "remote_addr":
		return fieldRemoteAddr
	case "remote_port":
		return fieldRemotePort
	case "status":
		return fieldStatus
	case "request_length":
		return fieldRequestLength
	case "bytes_sent":
		return fieldBytesSent
	case "request_time":
		return fieldRequestTime
	case "connection_time":
		return fieldConnectionTime
	case "msec":
		return fieldMsec
	case "connection":
		return fieldConnection
	case "host":
		return fieldHost
	}
	return fieldUnknown
}

// Recover handles a line that did not parse but holds a whole line after a
// torn one: when the spool filesystem is full, nginx's write() can be
// partial, and its next write appends a whole line to that fragment. An
// unescaped `{"` only starts an object (escape=json writes `\"` inside
// strings), so the last one past the start is where the whole line begins.
// It returns that line's offset, or 0 if there is none that parses.
func Recover(line []byte, r *Record) int {
	i := bytes.LastIndex(line, []byte(`{"`))
	if i <= 0 || Parse(line[i:], r) != OK {
		return 0
	}
	return i
}

func checkEnd(line []byte, i int, p Problem) Problem {
	if skipSpace(line, i) != len(line) {
		return Malformed
	}
	return p
}

// set stores one value. Quoted numbers have their quotes in val.
func (r *Record) set(f field, val []byte, seen *int, la, ra *netip.Addr, lp, rp *uint64) Problem {
	var (
		bit int
		ok  = true
	)
	switch f {
	case fieldServerAddr:
		bit, *la, ok = fServerAddr, parseAddr(unquote(val)), true
		ok = la.IsValid()
	case fieldServerPort:
		bit = fServerPort
		*lp, ok = parseUint(unquote(val))
	case fieldRemoteAddr:
		bit, *ra = fRemoteAddr, parseAddr(unquote(val))
		ok = ra.IsValid()
	case fieldRemotePort:
		bit = fRemotePort
		*rp, ok = parseUint(unquote(val))
	case fieldStatus:
		bit = fStatus
		var s uint64
		s, ok = parseUint(unquote(val))
		ok = ok && s <= 999
		r.Status = int(s)
	case fieldRequestLength:
		bit = fRequestLength
		r.RequestBytes, ok = parseUint(unquote(val))
	case fieldBytesSent:
		bit = fBytesSent
		r.ResponseBytes, ok = parseUint(unquote(val))
	case fieldRequestTime:
		bit = fRequestTime
		r.RequestTime, ok = parseSeconds(unquote(val))
	case fieldConnectionTime:
		if v := unquote(val); len(v) > 0 {
			r.ConnTime, ok = parseSeconds(v)
		}
	case fieldMsec:
		if v := unquote(val); len(v) > 0 {
			var d time.Duration
			d, ok = parseSeconds(v)
			r.Msec = d.Milliseconds()
		}
	case fieldConnection:
		if v := unquote(val); len(v) > 0 {
			r.Conn, ok = parseUint(v)
		}
	case fieldHost:
		r.Host = unquote(val)
	default:
		return OK
	}
	if !ok {
		switch bit {
		case fServerAddr, fServerPort, fRemoteAddr, fRemotePort:
			return BadAddress
		}
		return BadNumber
	}
	if *seen&bit != 0 {
		return Malformed // duplicate key
	}
	*seen |= bit
	return OK
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// scanString returns the contents of the JSON string at b[i] (escapes left
// in) and the index after its closing quote. Raw control characters are
// tolerated (nginx's escape=json never writes them; they harm nothing).
func scanString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	// Short strings (keys, numbers, addresses) byte by byte: cheaper than
	// setting up IndexByte.
	j := i + 1
	for end := min(len(b), j+shortString); j < end; j++ {
		switch b[j] {
		case '"':
			return b[i+1 : j], j + 1, true
		case '\\':
			return scanEscaped(b, i, j)
		}
	}
	// Longer: the closing quote, if no escape comes before it.
	if q := bytes.IndexByte(b[j:], '"'); q >= 0 && bytes.IndexByte(b[j:j+q], '\\') < 0 {
		return b[i+1 : j+q], j + q + 1, true
	}
	return scanEscaped(b, i, j)
}

// shortString is how many bytes scanString looks at one by one.
const shortString = 24

// scanEscaped finishes scanString from b[j], with escapes (the string
// started at b[i]; b[i+1:j] holds no quote and no backslash).
func scanEscaped(b []byte, i, j int) ([]byte, int, bool) {
	for ; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c == '\\':
			j++
			if j >= len(b) {
				return nil, j, false
			}
		}
	}
	return nil, len(b), false
}

// scanValue returns a string (with its quotes) or a number at b[i].
func scanValue(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) {
		return nil, i, false
	}
	if b[i] == '"' {
		_, j, ok := scanString(b, i)
		return b[i:j], j, ok
	}
	j := i
	for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == '-' || b[j] == '+' || b[j] == 'e' || b[j] == 'E') {
		j++
	}
	return b[i:j], j, j > i
}

func unquote(v []byte) []byte {
	if len(v) >= 2 && v[0] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// parseSeconds parses nginx's "s.mmm" (any number of decimals, up to ns).
func parseSeconds(b []byte) (time.Duration, bool) {
	dot := len(b)
	for i, c := range b {
		if c == '.' {
			dot = i
			break
		}
	}
	sec, ok := parseUint(b[:dot])
	if !ok || sec > 1<<33 {
		return 0, false
	}
	d := time.Duration(sec) * time.Second
	if dot == len(b) {
		return d, true
	}
	frac := b[dot+1:]
	if len(frac) == 0 || len(frac) > 9 {
		return 0, false
	}
	f, ok := parseUint(frac)
	if !ok {
		return 0, false
	}
	for n := len(frac); n < 9; n++ {
		f *= 10
	}
	return d + time.Duration(f), true
}

// parseAddr parses an IPv4 or IPv6 address (no zone) without allocating;
// the invalid Addr means it did not parse.
func parseAddr(b []byte) netip.Addr {
	if a, ok := parseIPv4(b); ok {
		return a
	}
	if len(b) == 0 || len(b) > 45 {
		return netip.Addr{}
	}
	for _, c := range b {
		if c == '%' {
			return netip.Addr{}
		}
	}
	// The string is only read during the call: no zone means nothing of it
	// is kept (an error would keep it, and is dropped here).
	a, err := netip.ParseAddr(unsafe.String(&b[0], len(b)))
	if err != nil {
		return netip.Addr{}
	}
	return a
}

// parseIPv4 parses a dotted quad of decimal octets without leading zeros,
// the form nginx writes; anything else (IPv6 too) is left to
// netip.ParseAddr (ok false), which also rejects what this rejects.
func parseIPv4(b []byte) (a netip.Addr, ok bool) {
	var ip [4]byte
	n, val, digits := 0, 0, 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			if digits == 1 && val == 0 {
				return a, false // leading zero
			}
			val = val*10 + int(c-'0')
			digits++
			if val > 255 {
				return a, false
			}
		case c == '.' && digits > 0 && n < 3:
			ip[n] = byte(val)
			n, val, digits = n+1, 0, 0
		default:
			return a, false
		}
	}
	if n != 3 || digits == 0 {
		return a, false
	}
	ip[3] = byte(val)
	return netip.AddrFrom4(ip), true
}
