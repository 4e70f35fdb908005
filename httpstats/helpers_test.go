package httpstats_test

import (
	"time"

	"github.com/ipng/ipng-stats/collector"
)

// waitRecorded waits (bounded) until coll holds n requests in total.
func waitRecorded(coll *collector.Collector, n uint64) bool {
	for i := 0; i < 500; i++ {
		if total(coll) >= n {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

func total(coll *collector.Collector) uint64 {
	var n uint64
	for _, s := range coll.Snapshot(collector.Filter{}).Series {
		for _, c := range s.Codes {
			n += c.Requests
		}
	}
	return n
}
