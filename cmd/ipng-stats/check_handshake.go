package main

import (
	"fmt"
	"io"
	"log/slog"
	"slices"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/handshake"
	"github.com/ipng/ipng-stats/internal/node"
)

// checkHandshakes reads the handshake stages a running agent counted since
// it started (privileged: the pins are the agent's) and names the stage
// that loses connections, per source tag. Without a running agent it only
// says so.
func checkHandshakes(w io.Writer, cfg *config.Config, logger *slog.Logger) (ok bool) {
	if !cfg.Handshakes.Enabled {
		fmt.Fprintln(w, "skip  handshakes: handshakes.enabled is false")
		return true
	}
	tags, err := node.NewBindings(cfg, logger)
	if err != nil {
		fmt.Fprintf(w, "skip  handshakes: %v\n", err)
		return true
	}
	s, err := handshake.ReadPinned(cfg.BPF.PinDir, tags.Table())
	if err != nil {
		fmt.Fprintf(w, "skip  handshakes: %v\n", err)
		return true
	}
	findings := handshake.Diagnose(s)
	for _, f := range findings {
		fmt.Fprintf(w, "FAIL  handshakes %s: %s\n", f.Tag, f.Message)
	}
	bad := map[string]bool{}
	for _, f := range findings {
		bad[f.Tag] = true
	}
	var tagsSeen []string
	for tag := range s.Devices {
		tagsSeen = append(tagsSeen, tag)
	}
	slices.Sort(tagsSeen)
	for _, tag := range tagsSeen {
		if bad[tag] {
			continue
		}
		var t handshake.Totals
		for _, d := range s.Devices[tag] {
			t.SynReceived += d.SynReceived
			t.SynackSent += d.SynackSent
			t.SynackWrongEgress += d.SynackWrongEgress
		}
		fmt.Fprintf(w, "ok    handshakes %s: %d SYNs received, %d SYN-ACKs sent, %d completed, %d SYN-ACKs through a bound device\n",
			tag, t.SynReceived, t.SynackSent, s.Completed[tag], t.SynackWrongEgress)
	}
	return len(findings) == 0
}
