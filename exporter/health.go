package exporter

// Health is what the agent reports about itself beyond counters: the JSON
// document's meta.health, shown in the header of the status page and the
// health line of `ipng-stats top`. Options.Health supplies it.
type Health struct {
	// Component is the command serving the document: "agent" or "proxy".
	Component string `json:"component"`
	// AttributionMode is the configured attribution.mode (auto, bpf, fallback).
	AttributionMode string `json:"attribution_mode"`
	// BPF is true when connections are attributed from the sock_ops
	// program's stamps (the agent loaded and attached it, or the proxy reads
	// a running agent's pinned maps).
	BPF bool `json:"bpf"`
	// Pktinfo is true when the IP_PKTINFO fallback is in use.
	Pktinfo bool `json:"pktinfo"`
	// NginxBacklogBytes is ipng_nginx_backlog_bytes; absent without the nginx ingest.
	NginxBacklogBytes *int64 `json:"nginx_backlog_bytes,omitempty"`
	// DefaultTag is the tag of connections no binding matches.
	DefaultTag string `json:"default_tag"`
	// Bindings are the configured device bindings and the ifindex each
	// resolves to now.
	Bindings []Binding `json:"bindings"`
}

// Binding is one configured binding and its current resolution.
type Binding struct {
	Device    string `json:"device"`
	Family    string `json:"family"` // "ipv4", "ipv6" or "any"
	SourceTag string `json:"source_tag"`
	// Ifindex is the device's current interface index; 0 when absent.
	Ifindex uint32 `json:"ifindex"`
	Present bool   `json:"present"`
}
