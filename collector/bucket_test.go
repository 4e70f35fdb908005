package collector

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

func TestBucketerIndex(t *testing.T) {
	dur := newBucketer(DefaultDurationBuckets(), 1e9)
	size := newBucketer(DefaultSizeBuckets(), 1)
	odd := newBucketer([]float64{0, 0.3, 1.5, 7}, 1)
	tests := []struct {
		name string
		b    *bucketer
		v    uint64
		want int
	}{
		{"zero duration", &dur, 0, 0},
		{"1ms is le=0.001", &dur, 1_000_000, 0},
		{"1ms+1ns", &dur, 1_000_001, 1},
		{"2.5ms", &dur, 2_500_000, 1},
		{"300ms", &dur, 300_000_000, 8},
		{"10s", &dur, 10_000_000_000, 12},
		{"10s+1ns is +Inf", &dur, 10_000_000_001, 13},
		{"huge duration", &dur, math.MaxInt64, 13},
		{"0 bytes", &size, 0, 0},
		{"100 bytes", &size, 100, 0},
		{"101 bytes", &size, 101, 1},
		{"10MB", &size, 10_000_000, 5},
		{"max bytes", &size, math.MaxUint64, 6},
		{"bound 0 holds 0", &odd, 0, 0},
		{"1 above 0.3", &odd, 1, 2},
		{"2 above 1.5", &odd, 2, 3},
		{"7", &odd, 7, 3},
		{"8", &odd, 8, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.b.index(tc.v); got != tc.want {
				t.Errorf("index(%d) = %d, want %d", tc.v, got, tc.want)
			}
		})
	}
}

// TestBucketerMatchesFloat checks the integer search against the float
// definition used by client_golang (sort.SearchFloat64s on v/scale).
func TestBucketerMatchesFloat(t *testing.T) {
	for _, tc := range []struct {
		bounds []float64
		scale  float64
	}{
		{DefaultDurationBuckets(), 1e9},
		{DefaultSizeBuckets(), 1},
		{[]float64{0.1, 0.2, 0.3, 0.7, 1.1, 3.3}, 1e9},
		{[]float64{1, 2, 4, 8, 16, 1 << 40}, 1},
	} {
		b := newBucketer(tc.bounds, tc.scale)
		r := rand.New(rand.NewPCG(1, 2))
		for range 200000 {
			v := r.Uint64() >> r.IntN(64)
			want := sort.SearchFloat64s(tc.bounds, float64(v)/tc.scale)
			if got := b.index(v); got != want {
				t.Fatalf("bounds %v: index(%d) = %d, want %d", tc.bounds, v, got, want)
			}
		}
	}
}
