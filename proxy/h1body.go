package proxy

// chunkState follows a chunked request body (RFC 9112 7.1) byte by byte,
// strictly: chunk-size is 1*HEXDIG that fits 63 bits, then optional BWS
// and chunk extensions without control characters, CRLF; chunk data is
// followed by CRLF exactly; the trailer section is field lines like the
// header's. It keeps no buffer: a body split anywhere across reads gives
// the same result.
type chunkState struct {
	st       uint8
	size     int64 // of the chunk being read (digits so far, then remaining data)
	digits   int
	lineLen  int // bytes of the current size or trailer line
	trailers int // bytes of trailer section so far
}

const (
	csSize uint8 = iota
	csSizeWS
	csExt
	csSizeLF
	csData
	csDataCR
	csDataLF
	csTrailerStart
	csTrailerName
	csTrailerValue
	csTrailerLF
	csEndLF
	csDone
)

const (
	maxChunkLine     = 4096 // like net/http's chunked reader
	maxTrailerBytes  = 16 << 10
	maxChunkSizeHexs = 16
)

// feed consumes p until the end of the body. It returns how many bytes
// belong to the body (all of p unless the body ends inside it), whether the
// body is complete, and a reason when the framing is malformed. If data is
// not nil, chunk data is appended to it (for the fuzz test's comparison).
func (cs *chunkState) feed(p []byte, data *[]byte) (int, bool, reason) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch cs.st {
		case csSize:
			v, ok := unhex(c)
			if ok {
				if cs.digits == maxChunkSizeHexs || cs.size > (1<<63-1)>>4 {
					return i, false, reasonChunkOverflow
				}
				cs.size = cs.size<<4 | int64(v)
				cs.digits++
				break
			}
			if cs.digits == 0 {
				return i, false, reasonChunk
			}
			switch c {
			case ' ', '\t':
				cs.st = csSizeWS
			case ';':
				cs.st = csExt
			case '\r':
				cs.st = csSizeLF
			default:
				return i, false, reasonChunk
			}
		case csSizeWS:
			// Whitespace may end the size line (as nginx and net/http
			// accept) but not precede an extension: net/http rejects
			// "1 ;x", and a parser that accepts less never frames a body
			// differently from the one behind it.
			switch c {
			case ' ', '\t':
			case '\r':
				cs.st = csSizeLF
			default:
				return i, false, reasonChunk
			}
		case csExt:
			if c == '\r' {
				cs.st = csSizeLF
			} else if c < ' ' && c != '\t' || c == 0x7f {
				return i, false, reasonChunk
			}
		case csSizeLF:
			if c != '\n' {
				return i, false, reasonChunk
			}
			cs.lineLen, cs.digits = 0, 0
			if cs.size == 0 {
				cs.st = csTrailerStart
			} else {
				cs.st = csData
			}
			continue
		case csData:
			n := int64(len(p) - i)
			if n > cs.size {
				n = cs.size
			}
			if data != nil {
				*data = append(*data, p[i:i+int(n)]...)
			}
			cs.size -= n
			i += int(n) - 1
			if cs.size == 0 {
				cs.st = csDataCR
			}
			continue
		case csDataCR:
			if c != '\r' {
				return i, false, reasonChunk
			}
			cs.st = csDataLF
		case csDataLF:
			if c != '\n' {
				return i, false, reasonChunk
			}
			cs.st = csSize
			continue
		case csTrailerStart:
			if c == '\r' {
				cs.st = csEndLF
				break
			}
			if !tchar[c] {
				return i, false, reasonChunk
			}
			cs.st = csTrailerName
		case csTrailerName:
			if c == ':' {
				cs.st = csTrailerValue
			} else if !tchar[c] {
				return i, false, reasonChunk
			}
		case csTrailerValue:
			if c == '\r' {
				cs.st = csTrailerLF
			} else if c < ' ' && c != '\t' || c == 0x7f {
				return i, false, reasonChunk
			}
		case csTrailerLF:
			if c != '\n' {
				return i, false, reasonChunk
			}
			cs.st = csTrailerStart
		case csEndLF:
			if c != '\n' {
				return i, false, reasonChunk
			}
			cs.st = csDone
			return i + 1, true, reasonNone
		}
		// Bound the size line and the trailer section.
		if cs.st >= csTrailerStart {
			cs.trailers++
			if cs.trailers > maxTrailerBytes {
				return i, false, reasonChunk
			}
		} else if cs.st <= csSizeLF {
			cs.lineLen++
			if cs.lineLen > maxChunkLine {
				return i, false, reasonChunk
			}
		}
	}
	return len(p), false, reasonNone
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
