package collector

import (
	"maps"
	"strings"
	"sync"
	"sync/atomic"
)

// maxReasons bounds the distinct label values of a reasonSet.
const maxReasons = 64

// otherReason is where reasons beyond maxReasons are counted.
const otherReason = "other"

// reasonSet is a bounded set of counters keyed by a reason label. It is used
// on rare paths (rejections, fallbacks), never per recorded request.
type reasonSet struct {
	mu sync.RWMutex
	m  map[string]*atomic.Uint64
}

// newReasonSet returns a set with the given reasons present at zero, so that
// they are exposed before they first happen.
func newReasonSet(initial ...string) *reasonSet {
	s := &reasonSet{m: make(map[string]*atomic.Uint64)}
	for _, r := range initial {
		if len(s.m) < maxReasons {
			s.m[cleanReason(r)] = new(atomic.Uint64)
		}
	}
	return s
}

func (s *reasonSet) counter(reason string) *atomic.Uint64 {
	reason = cleanReason(reason)
	s.mu.RLock()
	c, ok := s.m[reason]
	s.mu.RUnlock()
	if ok {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.m[reason]; ok {
		return c
	}
	if len(s.m) >= maxReasons {
		reason = otherReason
		if c, ok := s.m[reason]; ok {
			return c
		}
	}
	c = new(atomic.Uint64)
	s.m[reason] = c
	return c
}

// values returns reason → count, merged with extra (summed).
func (s *reasonSet) values(extra map[string]uint64) map[string]uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[string]uint64, len(s.m)+len(extra))
	maps.Copy(out, extra)
	for r, c := range s.m {
		out[r] += c.Load()
	}
	return out
}

// cleanReason makes reason a short, valid UTF-8 label value.
func cleanReason(reason string) string {
	if reason == "" {
		return "unspecified"
	}
	if len(reason) > 64 {
		reason = reason[:64]
	}
	return strings.ToValidUTF8(reason, "?")
}
