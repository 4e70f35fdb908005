// Package top is the model and rendering of `ipng-stats top`: it fetches the
// JSON document of a local or remote agent, turns it into rows per (source
// tag, VIP) or per source tag, sorts and filters them, and renders them as
// a plain-text table (--once) or a live terminal UI (bubbletea). It only
// reads the exporter's JSON over HTTP and must not touch the data path.
package top
