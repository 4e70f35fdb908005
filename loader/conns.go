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

// ReadConns sums the program's per-CPU connection counts.
func (m *Maps) ReadConns() ([]ConnCount, error) {
	var (
		key    ipngbpf.SockopsIpngConnKey
		perCPU []ipngbpf.SockopsIpngConnCount
		out    []ConnCount
	)
	it := m.Conns.Iterate()
	for it.Next(&key, &perCPU) {
		c := ConnCount{Key: ConnKey{VIP: unmap(key.Vip), TagID: key.TagId, Ifindex: key.Ifindex,
			Family: family.Family(key.Family), Bound: key.Bound != 0}}
		for _, v := range perCPU {
			c.Opened += v.Opened
			c.Closed += v.Closed
		}
		out = append(out, c)
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("iterating %s: %w", PinConns, err)
	}
	return out, nil
}
