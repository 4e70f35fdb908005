// Package exporter serves the collector's series over HTTP: Prometheus text,
// OpenMetrics and protobuf by content negotiation (client_golang's promhttp
// over the exporter's own prometheus.Gatherer), and a versioned JSON
// document, on /metrics and /.well-known/ipng/statsz, with ?source_tag= and
// ?vip= filters; plus a landing page and /-/healthy, /-/ready. TLS and basic
// auth come from a prometheus/exporter-toolkit web configuration file.
//
// It owns the HTTP surface and the JSON schema only. It does not count
// anything (package collector), read the agent's configuration (package
// config) or decide readiness (the agent passes Options.Ready).
package exporter
