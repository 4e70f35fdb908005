package collector

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// The benchmarks in this file are not the collector: they replay the
// designs that were measured before choosing Record's layout (see
// docs/benchmarks.md), with the same bucket search and outcome mix.

// BenchmarkDesignSevenAtomics is the straightforward layout: a request
// counter and three sums per class plus one bucket per histogram.
func BenchmarkDesignSevenAtomics(b *testing.B) {
	l := newLayout(Config{}.withDefaults())
	var w [256]atomic.Uint64
	outs := benchOutcomes()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := outs[i&63]
		ns := uint64(max(o.Duration, 0))
		c := classOf(o.Status)
		w[c*4].Add(1)
		w[c*4+1].Add(o.RequestBytes)
		w[c*4+2].Add(o.ResponseBytes)
		w[c*4+3].Add(ns)
		w[32+l.dur.index(ns)].Add(1)
		w[64+l.req.index(o.RequestBytes)].Add(1)
		w[96+l.resp.index(o.ResponseBytes)].Add(1)
	}
}

// BenchmarkDesignShardMutex takes a per-shard mutex and does the seven
// updates with plain adds: fewer locked instructions, but it is a lock, and
// a contended one parks goroutines.
func BenchmarkDesignShardMutex(b *testing.B) {
	l := newLayout(Config{}.withDefaults())
	var mu sync.Mutex
	var w [256]uint64
	outs := benchOutcomes()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o := outs[i&63]
		ns := uint64(max(o.Duration, 0))
		c := classOf(o.Status)
		mu.Lock()
		w[c*4]++
		w[c*4+1] += o.RequestBytes
		w[c*4+2] += o.ResponseBytes
		w[c*4+3] += ns
		w[32+l.dur.index(ns)]++
		w[64+l.req.index(o.RequestBytes)]++
		w[96+l.resp.index(o.ResponseBytes)]++
		mu.Unlock()
	}
}

// BenchmarkDesignShardMutexParallel is the mutex design with every
// goroutine on the same shard.
func BenchmarkDesignShardMutexParallel(b *testing.B) {
	l := newLayout(Config{}.withDefaults())
	var mu sync.Mutex
	var w [256]uint64
	outs := benchOutcomes()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			o := outs[i&63]
			i++
			c := classOf(o.Status)
			mu.Lock()
			w[c*4]++
			w[c*4+1] += o.RequestBytes
			w[32+l.dur.index(uint64(o.Duration))]++
			mu.Unlock()
		}
	})
}

// BenchmarkBucketSearch compares the bit-length table with a linear scan
// over the 13 default duration bounds. On this repeating mix the branch
// predictor learns the scan; the table keeps the cost bounded for up to 64
// bounds and unpredictable values.
func BenchmarkBucketSearch(b *testing.B) {
	l := newLayout(Config{}.withDefaults())
	outs := benchOutcomes()
	b.Run("table", func(b *testing.B) {
		s := 0
		for i := 0; i < b.N; i++ {
			s += l.dur.index(uint64(outs[i&63].Duration))
		}
		runtime.KeepAlive(s)
	})
	b.Run("linear", func(b *testing.B) {
		s := 0
		for i := 0; i < b.N; i++ {
			v := uint64(outs[i&63].Duration)
			j := 0
			for j < len(l.dur.limits) && v > l.dur.limits[j] {
				j++
			}
			s += j
		}
		runtime.KeepAlive(s)
	})
}
