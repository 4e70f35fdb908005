package loader

import (
	"fmt"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// CounterNames are the program's own counters, in the order of sockops.c's
// enum ipng_counter (TestCounterNames keeps the two in step).
// The array length makes a new enum value without a name a compile error.
var CounterNames = [ipngbpf.SockopsIpngCounterIPNG_CNT_MAX]string{
	ipngbpf.SockopsIpngCounterIPNG_CNT_STAMPED:         "stamped",
	ipngbpf.SockopsIpngCounterIPNG_CNT_SKB_MISSING:     "skb_missing",
	ipngbpf.SockopsIpngCounterIPNG_CNT_NO_IFINDEX:      "no_ifindex",
	ipngbpf.SockopsIpngCounterIPNG_CNT_STORAGE_FAILED:  "storage_failed",
	ipngbpf.SockopsIpngCounterIPNG_CNT_COOKIE_FAILED:   "cookie_update_failed",
	ipngbpf.SockopsIpngCounterIPNG_CNT_TUPLE_FAILED:    "tuple_update_failed",
	ipngbpf.SockopsIpngCounterIPNG_CNT_CLOSED:          "closed",
	ipngbpf.SockopsIpngCounterIPNG_CNT_OTHER_NETNS:     "other_netns",
	ipngbpf.SockopsIpngCounterIPNG_CNT_CONNS_FAILED:    "conns_update_failed",
	ipngbpf.SockopsIpngCounterIPNG_CNT_UNTAGGED:        "untagged",
	ipngbpf.SockopsIpngCounterIPNG_CNT_CLOSE_UNMATCHED: "close_unmatched",
}

// Counters sums the per-CPU program counters: name → value.
func (m *Maps) ReadCounters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(CounterNames))
	var perCPU []uint64
	for i, name := range CounterNames {
		if err := m.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("reading counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}
