package monitoring

import (
	"bytes"
	"fmt"
	"os"

	"gopkg.in/yaml.v3"
)

// Config holds every threshold and objective of the alerts, and the scrape
// job the rules select. The defaults (DefaultConfig) are what the committed
// bundle in deploy/monitoring/ is generated from; docs/runbook.md explains
// each alert.
type Config struct {
	// Job is the Prometheus job label of the agents' scrape job; the
	// agent-down alerts select up{job=Job}.
	Job string `yaml:"job"`
	// RunbookURL is the base URL of docs/runbook.md; each alert links to
	// RunbookURL + "#" + its anchor.
	RunbookURL string `yaml:"runbook_url"`

	// SLO is the availability objective per source tag: the fraction of
	// requests that are not 5xx (0.999 = 99.9 %). The 5xx burn-rate alerts
	// fire when the error budget 1−SLO burns too fast.
	SLO float64 `yaml:"slo"`
	// LatencyP99Seconds: IpngStatsLatencyP99High fires when a tag's p99
	// over 5 minutes stays above it for LatencyFor.
	LatencyP99Seconds float64 `yaml:"latency_p99_seconds"`
	LatencyFor        string  `yaml:"latency_for"`
	// MinRequestRate is the request rate (per second, per tag and instance)
	// below which the latency alert stays silent: a p99 of a handful of
	// requests is noise.
	MinRequestRate float64 `yaml:"min_request_rate"`

	// AgentDownFor: how long a target must be down (or absent) to alert.
	AgentDownFor string `yaml:"agent_down_for"`
	// FallbacksPerSecond: attribution fallbacks of one reason per second,
	// over 10 minutes, above which IpngStatsAttributionFallingBack fires.
	FallbacksPerSecond float64 `yaml:"fallbacks_per_second"`
	// IfindexMissesPerSecond: misses of one family per second, over 10
	// minutes, above which IpngStatsIfindexMisses fires.
	IfindexMissesPerSecond float64 `yaml:"ifindex_misses_per_second"`
	// TupleMissRatio: nginx lines not found in the 4-tuple map, as a
	// fraction of lines recorded, above which IpngStatsNginxTupleMisses fires.
	TupleMissRatio float64 `yaml:"tuple_miss_ratio"`
	// BacklogBytes: unread nginx access log above which, while still
	// growing, IpngStatsNginxBacklogGrowing fires.
	BacklogBytes float64 `yaml:"backlog_bytes"`
	// RejectedPerSecond: rejected request outcomes (unparsable log lines,
	// invalid labels) of one reason per second above which
	// IpngStatsOutcomesRejected fires.
	RejectedPerSecond float64 `yaml:"rejected_per_second"`
	// SeriesCapRatio: ipng_series / ipng_series_limit above which
	// IpngStatsSeriesNearCap fires.
	SeriesCapRatio float64 `yaml:"series_cap_ratio"`
	// HandshakeRatio: handshakes completed / SYNs received on a tag's bound
	// interfaces, over 5 minutes, below which IpngStatsHandshakesFailing
	// fires, while at least MinSYNRate SYNs per second arrive.
	HandshakeRatio float64 `yaml:"handshake_ratio"`
	MinSYNRate     float64 `yaml:"min_syn_rate"`
}

// DefaultConfig is the configuration of the committed bundle.
func DefaultConfig() Config {
	return Config{
		Job:                    "ipng-stats",
		RunbookURL:             "https://github.com/ipng/ipng-stats/blob/main/docs/runbook.md",
		SLO:                    0.999,
		LatencyP99Seconds:      0.5,
		LatencyFor:             "15m",
		MinRequestRate:         1,
		AgentDownFor:           "5m",
		FallbacksPerSecond:     0.01,
		IfindexMissesPerSecond: 0.01,
		TupleMissRatio:         0.01,
		BacklogBytes:           16 << 20,
		RejectedPerSecond:      0.01,
		SeriesCapRatio:         0.9,
		HandshakeRatio:         0.5,
		MinSYNRate:             0.1,
	}
}

// LoadConfig reads a YAML file of Config fields over the defaults. Unknown
// keys are an error, so a typo does not silently keep a default.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading monitoring config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("parsing monitoring config %q: %w", path, err)
	}
	return cfg, cfg.Validate()
}

// Validate checks the ranges of the thresholds.
func (c Config) Validate() error {
	switch {
	case c.Job == "":
		return fmt.Errorf("monitoring config: job is empty")
	case c.SLO <= 0 || c.SLO >= 1:
		return fmt.Errorf("monitoring config: slo %v is not between 0 and 1 (exclusive)", c.SLO)
	case c.LatencyP99Seconds <= 0:
		return fmt.Errorf("monitoring config: latency_p99_seconds %v is not positive", c.LatencyP99Seconds)
	case c.SeriesCapRatio <= 0 || c.SeriesCapRatio > 1:
		return fmt.Errorf("monitoring config: series_cap_ratio %v is not in (0, 1]", c.SeriesCapRatio)
	case c.HandshakeRatio <= 0 || c.HandshakeRatio > 1:
		return fmt.Errorf("monitoring config: handshake_ratio %v is not in (0, 1]", c.HandshakeRatio)
	case c.MinSYNRate < 0 || c.MinRequestRate < 0 || c.FallbacksPerSecond < 0 || c.IfindexMissesPerSecond < 0 ||
		c.TupleMissRatio < 0 || c.BacklogBytes < 0 || c.RejectedPerSecond < 0:
		return fmt.Errorf("monitoring config: a threshold is negative")
	}
	for _, d := range []string{c.LatencyFor, c.AgentDownFor} {
		if _, err := parseDuration(d); err != nil {
			return fmt.Errorf("monitoring config: %w", err)
		}
	}
	return nil
}
