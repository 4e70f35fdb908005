package node

import (
	"context"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/handshake"
)

// addHandshakes adds the counting of TCP handshake stages on the bound
// devices (package handshake) when handshakes.enabled is set and the agent
// runs its sock_ops program. Its meta series join the node's registry, and
// the collector's refresh reads its counts (Node.syncHandshakes). A kernel
// that cannot run the programs is logged, not fatal.
func (n *Node) addHandshakes() {
	cfg := n.Config
	if !cfg.Handshakes.Enabled || n.Program == nil {
		return
	}
	maps, names, tags := n.Maps, n.tagNames, n.Bindings
	m, err := handshake.New(handshakeConfig(cfg), handshake.Options{
		Collector: n.Collector, Bindings: tags, Logger: n.Logger, PinDir: cfg.BPF.PinDir, Cgroup: n.Program.Cgroup(),
		DiagnoseEvery: cfg.Handshakes.DiagnoseInterval,
		Completed: func() (map[string]uint64, error) {
			conns, err := maps.ReadConns()
			return handshake.Completed(conns, names, tags.Table()), err
		},
	})
	if err != nil {
		n.Logger.Warn("not counting TCP handshakes", "component", "handshake", "err", err)
		return
	}
	n.Registry.MustRegister(m)
	n.handshakes.Store(m)
	n.closers = append(n.closers, func() { m.Close() })
	n.parts = append(n.parts, Part{Name: "handshakes",
		// Attached before the agent says it runs: a SYN on a bound device
		// right after "agent running" is counted.
		Start: func(context.Context) error { m.Follow(); return nil },
		Run: func(ctx context.Context) error {
			defer m.Close()
			return m.Run(ctx)
		},
		Reload: func(next *config.Config) { m.Reload(handshakeConfig(next)) }})
}

// syncHandshakes reads the handshake counts into the collector (at each
// collector refresh, beside the connection counts).
func (n *Node) syncHandshakes() {
	if m := n.handshakes.Load(); m != nil {
		if err := m.Sync(); err != nil {
			n.Logger.Warn("reading the handshake counts", "err", err)
		}
	}
}

func handshakeConfig(cfg *config.Config) handshake.Config {
	h := handshake.Config{PortsRescan: cfg.Handshakes.PortsRescanInterval}
	for _, p := range cfg.Handshakes.Ports {
		h.Ports = append(h.Ports, uint16(p))
	}
	return h
}
