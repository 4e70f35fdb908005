package loader

import (
	"fmt"
	"net/netip"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
	"github.com/ipng/ipng-stats/family"
)

// ConnKey is one series of the program's connection counts: connections of
// the agent's network namespace accepted on VIP with the tag TagID (or,
// when TagID is 0, on Ifindex, whose tag the reader resolves).
type ConnKey struct {
	VIP     netip.Addr
	TagID   uint32
	Ifindex uint32 // only when TagID is 0
	Family  family.Family
	Bound   bool
}

// ConnCount is what the program counted for one ConnKey since its map was
// created: connections opened and closed.
type ConnCount struct {
	Key            ConnKey
	Opened, Closed uint64
}

// ReadConns sums the program's per-CPU connection counts of every series
// (ipng_series gives each its index in ipng_conns).
func (m *Maps) ReadConns() ([]ConnCount, error) {
	var (
		key    ipngbpf.SockopsIpngConnKey
		idx    uint32
		perCPU []ipngbpf.SockopsIpngConnCount
		out    []ConnCount
	)
	it := m.Series.Iterate()
	for it.Next(&key, &idx) {
		if err := m.Conns.Lookup(&idx, &perCPU); err != nil {
			return out, fmt.Errorf("reading series %d of %s: %w", idx, PinConns, err)
		}
		c := ConnCount{Key: ConnKey{VIP: unmap(key.Vip), TagID: key.TagId, Ifindex: key.Ifindex,
			Family: family.Family(key.Family), Bound: key.Bound != 0}}
		for _, v := range perCPU {
			c.Opened += v.Opened
			c.Closed += v.Closed
		}
		out = append(out, c)
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterating %s: %w", PinSeries, err)
	}
	return out, nil
}
