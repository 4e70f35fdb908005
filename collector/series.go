package collector

import (
	"sync/atomic"
	"time"
)

// Outcome is one finished HTTP request as reported by a source. The source
// tag and VIP are carried by the Series it is recorded into.
type Outcome struct {
	Status        int           // HTTP status; outside 100-599 counts as code="unknown"
	RequestBytes  uint64        // bytes read from the client (headers and body)
	ResponseBytes uint64        // bytes sent to the client (headers and body)
	Duration      time.Duration // first byte read to last byte written; negative counts as 0
}

// Code classes, in exposition order.
const (
	class1xx = iota
	class2xx
	class3xx
	class4xx
	class5xx
	classUnknown
	numClasses
)

// classIndex is the inverse of className.
func classIndex(code string) int {
	for c := range numClasses {
		if className(c) == code {
			return c
		}
	}
	return classUnknown
}

// className is the code label value of a class.
func className(c int) string {
	switch c {
	case class1xx:
		return "1xx"
	case class2xx:
		return "2xx"
	case class3xx:
		return "3xx"
	case class4xx:
		return "4xx"
	case class5xx:
		return "5xx"
	}
	return "unknown"
}

// classOf maps an HTTP status to its code class: 100-199 is 1xx ... 500-599
// is 5xx, anything else (0, 99, 600, negative) is unknown.
func classOf(status int) int {
	c := uint(status-100) / 100 // wraps to a huge value below 100
	if c > classUnknown {
		return classUnknown
	}
	return int(c)
}

// layout places the words of one shard. Every word is an atomic.Uint64.
//
//	classDur  numClasses x dur.n()  requests by (code class, duration bucket)
//	sizes     req.n() x resp.n()    requests by (request size bucket, response size bucket)
//	sums      numClasses x 3        request bytes, response bytes, duration ns by class
//	conns     7                     connections total, active, reading, writing;
//	                                SYNs received, SYN-ACKs sent, SYN-ACKs on the wrong egress
//
// Requests per class are the row sums of classDur, the duration histogram is
// its column sums, and both size histograms are the margins of sizes: one add
// serves two series, so Record does five atomic adds instead of seven.
type layout struct {
	dur, req, resp bucketer
	offSizes       int
	offSums        int
	offConns       int
	words          int // used words per shard
	stride         int // words per shard including padding
	native         bool
}

const (
	sumReqBytes = iota
	sumRespBytes
	sumDurNanos
	numSums
)

const (
	connTotal = iota
	connActive
	connReading
	connWriting
	hsSynReceived // TCP handshake stages (package handshake)
	hsSynackSent
	hsSynackWrongEgress
	numConnWords
)

func newLayout(cfg Config) *layout {
	l := &layout{
		dur:    newBucketer(cfg.DurationBuckets, 1e9),
		req:    newBucketer(cfg.RequestSizeBuckets, 1),
		resp:   newBucketer(cfg.ResponseSizeBuckets, 1),
		native: cfg.NativeHistograms,
	}
	l.offSizes = numClasses * l.dur.n()
	l.offSums = l.offSizes + l.req.n()*l.resp.n()
	l.offConns = l.offSums + numClasses*numSums
	l.words = l.offConns + numConnWords
	// Round up to whole cache lines and add one line of padding, so that two
	// shards never share a line whatever the allocation's alignment.
	l.stride = (l.words+7)/8*8 + 8
	return l
}

// shard is one stripe of a series. A connection's Series handle points to
// one shard; the words are summed over shards when a snapshot is taken.
type shard struct {
	lay    *layout
	e      *entry
	w      []atomic.Uint64 // lay.words long
	reject *atomic.Uint64  // non-nil: a sink that counts rejected outcomes
}

// Series is the handle through which a source records outcomes for one
// (source_tag, vip). Resolve it once per connection with (*Collector).Series
// and keep it: every method is lock-free, allocation-free and safe for
// concurrent use. The zero Series discards everything.
type Series struct {
	sh *shard
}

// Record counts one finished request. It does five atomic adds on words of
// this connection's shard (plus three client_golang observations when native
// histograms are enabled).
func (s Series) Record(o Outcome) {
	sh := s.sh
	if sh == nil {
		return
	}
	if sh.reject != nil {
		sh.reject.Add(1)
		return
	}
	l := sh.lay
	ns := uint64(max(o.Duration, 0))
	c := classOf(o.Status)
	w := sh.w
	w[c*l.dur.n()+l.dur.index(ns)].Add(1)
	w[l.offSizes+l.req.index(o.RequestBytes)*l.resp.n()+l.resp.index(o.ResponseBytes)].Add(1)
	sums := w[l.offSums+c*numSums : l.offSums+c*numSums+numSums]
	sums[sumReqBytes].Add(o.RequestBytes)
	sums[sumRespBytes].Add(o.ResponseBytes)
	sums[sumDurNanos].Add(ns)
	if l.native {
		sh.e.native.observe(o, ns)
	}
}

// ConnOpened counts an accepted connection: ipng_connections_total and
// ipng_connections_active. Call ConnClosed when it ends.
func (s Series) ConnOpened() {
	if s.sh == nil || s.sh.reject != nil {
		return
	}
	s.sh.e.markConns()
	s.sh.w[s.sh.lay.offConns+connTotal].Add(1)
	s.sh.w[s.sh.lay.offConns+connActive].Add(1)
}

// AddConns counts opened connections and closes closed ones at once (the
// sock_ops program counts them in the kernel; the agent adds what it counted
// since its last read).
func (s Series) AddConns(opened, closed uint64) {
	if s.sh == nil || s.sh.reject != nil || opened == 0 && closed == 0 {
		return
	}
	s.sh.e.markConns()
	s.sh.w[s.sh.lay.offConns+connTotal].Add(opened)
	s.sh.w[s.sh.lay.offConns+connActive].Add(opened - closed) // two's complement, as in addConn
}

// AddHandshakes adds counts of TCP handshake stages (the handshake
// programs count them in the kernel; the agent adds what they counted since
// its last read): SYNs received on a bound interface, SYN-ACKs the stack
// sent in answer, and SYN-ACKs that left through the bound interface itself.
func (s Series) AddHandshakes(synReceived, synackSent, synackWrongEgress uint64) {
	if s.sh == nil || s.sh.reject != nil {
		return
	}
	s.sh.e.markHandshakes()
	w := s.sh.w[s.sh.lay.offConns:]
	w[hsSynReceived].Add(synReceived)
	w[hsSynackSent].Add(synackSent)
	w[hsSynackWrongEgress].Add(synackWrongEgress)
}

// ConnClosed ends a connection counted by ConnOpened.
func (s Series) ConnClosed() { s.addConn(connActive, -1) }

// AddReading moves ipng_requests_reading by delta (+1 when a request starts
// being read, -1 when its body has been read).
func (s Series) AddReading(delta int) { s.addInFlight(connReading, delta) }

// AddWriting moves ipng_requests_writing by delta (+1 when the response
// starts, -1 when it has been written).
func (s Series) AddWriting(delta int) { s.addInFlight(connWriting, delta) }

func (s Series) addInFlight(word, delta int) {
	if s.sh == nil || s.sh.reject != nil {
		return
	}
	s.sh.e.markInFlight()
	s.addConn(word, delta)
}

func (s Series) addConn(word, delta int) {
	if s.sh == nil || s.sh.reject != nil {
		return
	}
	// Two's complement: adding uint64(-1) decrements; gauges are summed as int64.
	s.sh.w[s.sh.lay.offConns+word].Add(uint64(int64(delta)))
}

// SourceTag and VIP return the labels this handle records under ("other" for
// an overflow series, "" for a rejecting handle).
func (s Series) SourceTag() string {
	if s.sh == nil || s.sh.e == nil {
		return ""
	}
	return s.sh.e.tag
}

// VIP: see SourceTag.
func (s Series) VIP() string {
	if s.sh == nil || s.sh.e == nil {
		return ""
	}
	return s.sh.e.vip
}
