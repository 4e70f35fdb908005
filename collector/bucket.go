package collector

import (
	"math"
	"math/bits"
)

// bucketer finds the histogram bucket of an integer observation (nanoseconds
// or bytes) without floating point and in a bounded number of steps: a table
// indexed by the bit length of the value gives the first bucket that can hold
// it, and a short forward scan finishes the job.
type bucketer struct {
	bounds []float64 // upper bounds in the exposed unit (seconds or bytes)
	limits []uint64  // limits[i]: the largest integer observation that falls in bucket i
	start  [65]uint8 // start[bits.Len64(v)]: first bucket whose limit can be >= v
}

// newBucketer builds a bucketer for bounds expressed in units of scale
// integer steps (1e9 for seconds observed as nanoseconds, 1 for bytes).
// bounds must be validated (finite, >= 0, strictly increasing, <= 64 of them).
func newBucketer(bounds []float64, scale float64) bucketer {
	b := bucketer{bounds: bounds, limits: make([]uint64, len(bounds))}
	for i, ub := range bounds {
		b.limits[i] = integerLimit(ub, scale)
	}
	for n := range b.start {
		var lowest uint64 // smallest value whose bit length is n
		if n > 0 {
			lowest = 1 << (n - 1)
		}
		i := 0
		for i < len(b.limits) && b.limits[i] < lowest {
			i++
		}
		b.start[n] = uint8(i)
	}
	return b
}

// integerLimit is the largest integer n with float64(n)/scale <= ub, so that
// an integer observation v lands in the bucket "le=ub" exactly when a float
// observation v/scale would (Prometheus buckets are inclusive upper bounds).
func integerLimit(ub, scale float64) uint64 {
	x := ub * scale
	if x >= math.MaxUint64/2 {
		return math.MaxUint64 / 2
	}
	n := uint64(math.Floor(x))
	for float64(n+1)/scale <= ub {
		n++
	}
	for n > 0 && float64(n)/scale > ub {
		n--
	}
	return n
}

// index returns the bucket of v: 0..len(bounds)-1, or len(bounds) for +Inf.
func (b *bucketer) index(v uint64) int {
	i := int(b.start[bits.Len64(v)])
	for i < len(b.limits) && v > b.limits[i] {
		i++
	}
	return i
}

// n is the number of buckets including +Inf.
func (b *bucketer) n() int { return len(b.limits) + 1 }
