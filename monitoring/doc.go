// Package monitoring builds the operators' view of ipng-stats: the Grafana
// dashboards (Overview, VIP drill-down, Agent health), the Prometheus
// recording rules and the alerts, from the metric names the agent exports.
//
// Dashboards are typed values of the Grafana Foundation SDK; rules and
// alerts are plain Prometheus rule groups. Every threshold an alert
// uses lives in Config, so a site changes its objectives in one place and
// regenerates (`go run ./monitoring/gen -config mine.yml`). Files returns the
// whole bundle as file name → content; `make generate` writes it to
// deploy/monitoring/, where it is committed and checked for staleness.
//
// The package owns no runtime state and touches nothing outside the bytes
// it returns; it does not know how the agent counts, only what it exports
// (docs/metrics.md).
package monitoring

//go:generate go run ./gen -out ../deploy/monitoring
