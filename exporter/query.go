package exporter

import (
	"fmt"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/expfmt"

	"github.com/ipng/ipng-stats/collector"
)

// Query parameters of the stats paths.
const (
	paramFormat    = "format"
	paramSourceTag = "source_tag"
	paramVIP       = "vip"
)

// Values of ?format=.
const (
	formatJSON        = "json"
	formatPrometheus  = "prometheus"  // negotiated from Accept among the Prometheus formats
	formatText        = "text"        // Prometheus text 0.0.4
	formatOpenMetrics = "openmetrics" // OpenMetrics 1.0.0 text
)

// Bounds on a query, so that a filter cannot make a scrape expensive.
const (
	maxFilterValues = 64
	maxQueryLength  = 8 << 10
)

// query is a validated stats request.
type query struct {
	format string // "" or one of the format* values
	filter collector.Filter
}

// badRequest is a client error whose message is sent with status 400.
type badRequest struct{ msg string }

func (e *badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error {
	return &badRequest{msg: fmt.Sprintf(format, args...)}
}

// parseQuery validates a raw query string. Unknown parameters, repeated
// format, empty or malformed values are errors naming the parameter.
func parseQuery(raw string) (query, error) {
	var q query
	if len(raw) > maxQueryLength {
		return q, badf("query string longer than %d bytes", maxQueryLength)
	}
	values, err := url.ParseQuery(raw)
	if err != nil {
		return q, badf("invalid query string: %v", err)
	}
	var unknown []string
	for k := range values {
		if k != paramFormat && k != paramSourceTag && k != paramVIP {
			unknown = append(unknown, strconv.Quote(k))
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		noun := "parameter"
		if len(unknown) > 1 {
			noun = "parameters"
		}
		return q, badf("unknown query %s %s (known: format, source_tag, vip)", noun, strings.Join(unknown, ", "))
	}
	if fs, ok := values[paramFormat]; ok {
		if len(fs) != 1 {
			return q, badf("query parameter %q given %d times, want once", paramFormat, len(fs))
		}
		switch fs[0] {
		case formatJSON, formatPrometheus, formatText, formatOpenMetrics:
		default:
			return q, badf("invalid value %q for query parameter %q (want %s, %s, %s or %s)",
				fs[0], paramFormat, formatJSON, formatPrometheus, formatText, formatOpenMetrics)
		}
		q.format = fs[0]
	}
	tags, vips := values[paramSourceTag], values[paramVIP]
	if len(tags) > maxFilterValues || len(vips) > maxFilterValues {
		return q, badf("more than %d values for query parameter %q or %q", maxFilterValues, paramSourceTag, paramVIP)
	}
	for _, t := range tags {
		if !collector.ValidSourceTag(t) {
			return q, badf("invalid value %q for query parameter %q (want 1-63 characters of [A-Za-z0-9_.:-], starting with a letter or digit)", t, paramSourceTag)
		}
		q.filter.SourceTags = append(q.filter.SourceTags, t)
	}
	for _, v := range vips {
		c, ok := canonicalVIP(v)
		if !ok {
			return q, badf("invalid value %q for query parameter %q (want an IP address without zone, or %q)", v, paramVIP, collector.OverflowVIP)
		}
		q.filter.VIPs = append(q.filter.VIPs, c)
	}
	return q, nil
}

// canonicalVIP returns the label form of an address given in a query: IPv4
// dotted, IPv6 compressed, IPv4-mapped IPv6 as IPv4; or "other".
func canonicalVIP(s string) (string, bool) {
	if s == collector.OverflowVIP {
		return s, true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", false
	}
	return a.Unmap().String(), true
}

// wantJSON reports whether the response should be JSON: ?format=json, or no
// format and an Accept header that ranks application/json at least as high
// as every Prometheus format (wildcards do not count).
func wantJSON(q query, h http.Header) bool {
	switch q.format {
	case formatJSON:
		return true
	case "":
	default:
		return false
	}
	var jsonQ, promQ float64
	for _, part := range strings.Split(strings.Join(h.Values("Accept"), ","), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		qv := 1.0
		if s, ok := params["q"]; ok {
			if f, err := strconv.ParseFloat(s, 64); err == nil {
				qv = f
			}
		}
		switch mt {
		case "application/json":
			jsonQ = max(jsonQ, qv)
		case "text/plain", "application/openmetrics-text", "application/vnd.google.protobuf":
			promQ = max(promQ, qv)
		}
	}
	return jsonQ > 0 && jsonQ >= promQ
}

// promFormat is the exposition format for a non-JSON response.
func promFormat(q query, h http.Header) expfmt.Format {
	switch q.format {
	case formatText:
		return expfmt.NewFormat(expfmt.TypeTextPlain)
	case formatOpenMetrics:
		return expfmt.FmtOpenMetrics_1_0_0
	}
	return expfmt.NegotiateAccept(h, expfmt.DefaultOpenMetricsAcceptedFormats()...)
}
