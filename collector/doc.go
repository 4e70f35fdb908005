// Package collector owns the per-(source_tag, vip) HTTP traffic counters and
// histograms of ipng-stats and turns them into Prometheus metric families and
// plain snapshots.
//
// HTTP sources (the Go proxy, the nginx access-log reader, embedding servers)
// resolve a Series handle once per connection or per (source tag, VIP) with
// (*Collector).Series and then call Series.Record for every finished request.
// Record is the hot path: it does five uncontended atomic adds into a
// per-connection shard of the series and never allocates or locks. Totals,
// histogram counts and sums are derived when a snapshot is taken.
//
// The package also keeps the agent's meta counters (rejected outcomes,
// attribution fallbacks, series overflow) and pulls the ones other packages
// own (ifindex misses, BPF program counters) through function hooks.
//
// It does not serve HTTP, encode exposition formats or JSON (package
// exporter), learn interfaces or tags (packages attribution and bindings), or
// read configuration files (package config): it is handed a Config.
package collector
