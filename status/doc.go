// Package status is the agent's live status page for people: a table per
// (source tag, VIP) with rates, code-class shares, latency, bytes and
// connections, the agent's health and its bindings. It is served on the
// metrics port next to /metrics (so the exporter's TLS and basic auth cover
// it), rendered on the server for the first paint (it works with scripting
// disabled) and kept live by a small script that polls the exporter's JSON
// document, pausing while the tab is hidden. Every asset is embedded; the
// page makes no request to another origin.
//
// The package owns the page and its assets. It reads documents through the
// function it is given and must not touch the collector or the data path.
package status
