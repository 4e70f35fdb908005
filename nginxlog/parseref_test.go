package nginxlog

import (
	"bytes"
	"net/netip"
	"time"
	"unsafe"
)

// refParse is the generic parser Parse replaced (a flat JSON object scanned
// key by key, each key found with a switch): FuzzParse checks that Parse
// answers exactly as it does. The value parsers (numbers, durations,
// quotes) are Parse's own; addresses are checked against netip.
// Keys may come in any order; unknown keys are skipped; values are JSON
// strings or numbers (numbers may be quoted, as in the shipped log_format).
func refParse(line []byte, r *Record) Problem {
	*r = Record{ConnTime: -1}
	var la, ra netip.Addr
	var lp, rp uint64
	seen := 0
	i := skipSpace(line, 0)
	if i >= len(line) || line[i] != '{' {
		return Malformed
	}
	i = skipSpace(line, i+1)
	if i < len(line) && line[i] == '}' {
		return refCheckEnd(line, i+1, MissingField)
	}
	for {
		key, j, ok := refScanString(line, i)
		if !ok {
			return Malformed
		}
		j = skipSpace(line, j)
		if j >= len(line) || line[j] != ':' {
			return Malformed
		}
		j = skipSpace(line, j+1)
		val, next, ok := refScanValue(line, j)
		if !ok {
			return Malformed
		}
		if p := refSet(r, key, val, &seen, &la, &ra, &lp, &rp); p != OK {
			return p
		}
		i = skipSpace(line, next)
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
	if p := refCheckEnd(line, i+1, OK); p != OK {
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

// set stores one value. Quoted numbers have their quotes in val.
func refSet(r *Record, key, val []byte, seen *int, la, ra *netip.Addr, lp, rp *uint64) Problem {
	var (
		bit int
		ok  = true
	)
	switch string(key) {
	case "server_addr":
		bit, *la, ok = fServerAddr, refParseAddr(unquote(val)), true
		ok = la.IsValid()
	case "server_port":
		bit = fServerPort
		*lp, ok = parseUint(unquote(val))
	case "remote_addr":
		bit, *ra = fRemoteAddr, refParseAddr(unquote(val))
		ok = ra.IsValid()
	case "remote_port":
		bit = fRemotePort
		*rp, ok = parseUint(unquote(val))
	case "status":
		bit = fStatus
		var s uint64
		s, ok = parseUint(unquote(val))
		ok = ok && s <= 999
		r.Status = int(s)
	case "request_length":
		bit = fRequestLength
		r.RequestBytes, ok = parseUint(unquote(val))
	case "bytes_sent":
		bit = fBytesSent
		r.ResponseBytes, ok = parseUint(unquote(val))
	case "request_time":
		bit = fRequestTime
		r.RequestTime, ok = parseSeconds(unquote(val))
	case "connection_time":
		if v := unquote(val); len(v) > 0 {
			r.ConnTime, ok = parseSeconds(v)
		}
	case "msec":
		if v := unquote(val); len(v) > 0 {
			var d time.Duration
			d, ok = parseSeconds(v)
			r.Msec = d.Milliseconds()
		}
	case "connection":
		if v := unquote(val); len(v) > 0 {
			r.Conn, ok = parseUint(v)
		}
	case "host":
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

// scanString returns the contents of the JSON string at b[i] (escapes left
// in) and the index after its closing quote. Raw control characters are
// tolerated (nginx's escape=json never writes them; they harm nothing).
func refScanString(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, i, false
	}
	// Fast path: no escape before the closing quote.
	if q := bytes.IndexByte(b[i+1:], '"'); q >= 0 {
		s := b[i+1 : i+1+q]
		if bytes.IndexByte(s, '\\') < 0 {
			return s, i + 2 + q, true
		}
	}
	for j := i + 1; j < len(b); j++ {
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
func refScanValue(b []byte, i int) ([]byte, int, bool) {
	if i >= len(b) {
		return nil, i, false
	}
	if b[i] == '"' {
		_, j, ok := refScanString(b, i)
		return b[i:j], j, ok
	}
	j := i
	for j < len(b) && (b[j] >= '0' && b[j] <= '9' || b[j] == '.' || b[j] == '-' || b[j] == '+' || b[j] == 'e' || b[j] == 'E') {
		j++
	}
	return b[i:j], j, j > i
}

// refParseAddr parses an IPv4 or IPv6 address (no zone) without allocating;
// the invalid Addr means it did not parse.
func refParseAddr(b []byte) netip.Addr {
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

func refCheckEnd(line []byte, i int, p Problem) Problem {
	if skipSpace(line, i) != len(line) {
		return Malformed
	}
	return p
}
