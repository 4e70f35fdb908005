package collector

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"time"
)

// DefaultMaxSeries is the cap on (source_tag, vip) series when Config.MaxSeries is 0.
const DefaultMaxSeries = 10000

// maxShards bounds Config.Shards; the default is min(GOMAXPROCS, defaultMaxShards).
const (
	maxShards        = 64
	defaultMaxShards = 4
	maxBuckets       = 64
)

// DefaultDurationBuckets are the upper bounds, in seconds, of
// ipng_request_duration_seconds.
func DefaultDurationBuckets() []float64 {
	return []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
}

// DefaultSizeBuckets are the upper bounds, in bytes, of ipng_request_size_bytes
// and ipng_response_size_bytes.
func DefaultSizeBuckets() []float64 {
	return []float64{100, 1000, 10000, 100000, 1000000, 10000000}
}

// Config is what the collector is told by the agent's configuration. The zero
// value is valid and means "all defaults".
//
// Only MaxSeries can change on a reload (SetConfig); bucket bounds, native
// histograms and Shards are fixed for the life of the Collector, because
// changing them would reset or mix histogram layouts of live series.
type Config struct {
	// MaxSeries caps the number of distinct (source_tag, vip) series. New
	// pairs beyond it are folded into (source_tag, vip="other"). 0 means
	// DefaultMaxSeries.
	MaxSeries int
	// DurationBuckets are the histogram upper bounds in seconds; nil means
	// DefaultDurationBuckets.
	DurationBuckets []float64
	// RequestSizeBuckets and ResponseSizeBuckets are the histogram upper
	// bounds in bytes; nil means DefaultSizeBuckets.
	RequestSizeBuckets  []float64
	ResponseSizeBuckets []float64
	// NativeHistograms additionally exposes the three histograms as native
	// (sparse, schema 3) histograms in the protobuf format. It costs about
	// three client_golang Observe calls per request and a few KiB per series.
	NativeHistograms bool
	// Shards is the number of stripes per series; connections are spread
	// over them round-robin so that cores recording into the same series
	// rarely share a cache line. 0 means min(GOMAXPROCS, 4).
	Shards int
}

// withDefaults returns c with zero fields replaced by their defaults.
func (c Config) withDefaults() Config {
	if c.MaxSeries == 0 {
		c.MaxSeries = DefaultMaxSeries
	}
	if c.DurationBuckets == nil {
		c.DurationBuckets = DefaultDurationBuckets()
	}
	if c.RequestSizeBuckets == nil {
		c.RequestSizeBuckets = DefaultSizeBuckets()
	}
	if c.ResponseSizeBuckets == nil {
		c.ResponseSizeBuckets = DefaultSizeBuckets()
	}
	if c.Shards == 0 {
		c.Shards = min(runtime.GOMAXPROCS(0), defaultMaxShards)
	}
	return c
}

// Validate reports every problem with c (after defaults are applied).
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if c.MaxSeries < 1 {
		errs = append(errs, fmt.Errorf("max series %d: must be at least 1", c.MaxSeries))
	}
	if c.Shards < 1 || c.Shards > maxShards {
		errs = append(errs, fmt.Errorf("shards %d: must be between 1 and %d", c.Shards, maxShards))
	}
	for _, b := range []struct {
		name   string
		bounds []float64
	}{
		{"duration buckets", c.DurationBuckets},
		{"request size buckets", c.RequestSizeBuckets},
		{"response size buckets", c.ResponseSizeBuckets},
	} {
		if err := validateBounds(b.bounds); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", b.name, err))
		}
	}
	return errors.Join(errs...)
}

func validateBounds(bounds []float64) error {
	if len(bounds) == 0 {
		return errors.New("at least one bound is required")
	}
	if len(bounds) > maxBuckets {
		return fmt.Errorf("%d bounds: at most %d are allowed", len(bounds), maxBuckets)
	}
	for i, b := range bounds {
		if math.IsNaN(b) || math.IsInf(b, 0) || b < 0 {
			return fmt.Errorf("bound %v: must be finite and not negative", b)
		}
		if i > 0 && b <= bounds[i-1] {
			return fmt.Errorf("bound %v: bounds must be strictly increasing", b)
		}
	}
	return nil
}

// fixedFieldsDiffer lists the fields of next that differ from cur but cannot
// change without a restart.
func fixedFieldsDiffer(cur, next Config) []string {
	var d []string
	if !slices.Equal(cur.DurationBuckets, next.DurationBuckets) {
		d = append(d, "duration buckets")
	}
	if !slices.Equal(cur.RequestSizeBuckets, next.RequestSizeBuckets) {
		d = append(d, "request size buckets")
	}
	if !slices.Equal(cur.ResponseSizeBuckets, next.ResponseSizeBuckets) {
		d = append(d, "response size buckets")
	}
	if cur.NativeHistograms != next.NativeHistograms {
		d = append(d, "native histograms")
	}
	if cur.Shards != next.Shards {
		d = append(d, "shards")
	}
	return d
}

// BuildInfo is exposed as ipng_build_info{version, revision, goversion} 1.
type BuildInfo struct {
	Version   string
	Revision  string
	GoVersion string // empty: runtime.Version()
}

// Options are the collector's fixed collaborators.
type Options struct {
	// Logger receives warnings (e.g. ignored reload changes); nil discards.
	Logger *slog.Logger
	// Build is exposed as ipng_build_info.
	Build BuildInfo
	// Now is the clock used for rates, uptime and snapshot times; nil means
	// time.Now. Tests set it.
	Now func() time.Time
	// RejectReasons and FallbackReasons are exposed at 0 from the start
	// (ipng_outcomes_rejected_total, ipng_attribution_fallbacks_total), so
	// that rate() sees their first increment.
	RejectReasons   []string
	FallbackReasons []string
}
