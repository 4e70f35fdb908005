package status

import (
	"fmt"
	"math"
	"strconv"
)

// These formatters are shared with `ipng-stats top` and mirrored by
// assets/status.js, so the page's first paint and its live updates read
// alike.

// FormatRate formats requests per second: two decimals below 10, one below
// 100, none above.
func FormatRate(v float64) string {
	switch {
	case v < 10:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 100:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// FormatShare formats a fraction as a percentage with one decimal, and "–"
// when the class was not seen.
func FormatShare(v float64, seen bool) string {
	if !seen {
		return "–"
	}
	return strconv.FormatFloat(100*v, 'f', 1, 64) + "%"
}

// FormatSeconds formats a latency in µs, ms or s with three significant
// digits; nil (no requests) is "–".
func FormatSeconds(v *float64) string {
	if v == nil || math.IsNaN(*v) {
		return "–"
	}
	s := *v
	switch {
	case s < 1e-3:
		return sig3(s*1e6) + " µs"
	case s < 1:
		return sig3(s*1e3) + " ms"
	}
	return sig3(s) + " s"
}

// FormatBytes formats a byte count with SI prefixes (B, kB, MB, GB, TB).
func FormatBytes(v float64) string {
	units := []string{"B", "kB", "MB", "GB", "TB"}
	i := 0
	for v >= 1000 && i < len(units)-1 {
		v /= 1000
		i++
	}
	if i == 0 {
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64) + " B"
	}
	return sig3(v) + " " + units[i]
}

// FormatBytesPerSecond is FormatBytes with "/s".
func FormatBytesPerSecond(v float64) string { return FormatBytes(v) + "/s" }

// FormatUptime formats seconds as "3d 4h", "4h 5m", "5m 6s" or "6s".
func FormatUptime(sec float64) string {
	s := int64(sec)
	d, h, m := s/86400, s/3600%24, s/60%60
	switch {
	case d > 0:
		return fmt.Sprintf("%dd %dh", d, h)
	case h > 0:
		return fmt.Sprintf("%dh %dm", h, m)
	case m > 0:
		return fmt.Sprintf("%dm %ds", m, s%60)
	}
	return fmt.Sprintf("%ds", s)
}

// sig3 formats v with three significant digits, without exponent.
func sig3(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

func formatCount(n uint64) string { return strconv.FormatUint(n, 10) }
