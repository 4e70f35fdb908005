// Package nginxlog owns the ingest of stock nginx access logs: it consumes
// the access log nginx writes in the ipng_stats log_format (a JSON object per
// line, see Snippet) from a spool file on tmpfs, frees what it has read,
// finds every line's 4-tuple among the stamps the sock_ops program writes to
// its ring for the ingest (ipng_tuple_stamps, memory-mapped),
// maps the ingress interface to a source tag through the bindings resolver,
// and records the request into the collector. It optionally forwards every
// line, enriched with source_tag and device, to a UDP logtail target.
//
// The transport is a regular file on a dedicated, size-limited tmpfs, written
// by nginx with `access_log ... buffer=64k flush=1s`: nginx never blocks on
// it (a write to tmpfs does not wait for a reader), every write is a whole
// number of lines appended with O_APPEND (no tearing or interleaving between
// workers), and the agent frees consumed bytes with FALLOC_FL_PUNCH_HOLE so
// the spool uses memory only for lines not yet read. While the agent is down
// the tmpfs size bounds memory; reopen, reload and rename-style log rotation
// are followed.
//
// The package does not load or attach the BPF program (package loader), does
// not learn interfaces (package bindings), does not serve metrics (packages
// collector and exporter; Ingest is a prometheus.Collector for its own
// ipng_nginx_* series that the agent registers) and does not read the
// configuration file (package config): it is handed a config.NginxConfig.
package nginxlog
