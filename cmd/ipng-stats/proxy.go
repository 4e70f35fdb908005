package main

import (
	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/internal/node"
)

func proxyCommand() *cli.Command {
	return &cli.Command{
		Name:  "proxy",
		Usage: "run only the built-in reverse proxy (the proxy: section) and its metrics endpoint",
		Description: "Runs the listeners and upstreams of the proxy: section (proxy.enabled is implied) and serves " +
			"their per (source_tag, vip, code) metrics on web.listen_address. It loads no BPF program: with " +
			"attribution.mode auto or bpf it reads the maps a running agent pinned in bpf.pin_dir (auto falls back " +
			"to IP_PKTINFO without them); fallback needs no privilege beyond binding the ports. SIGHUP reloads the configuration " +
			"(listeners that stay keep their sockets); SIGTERM or SIGINT drains in-flight requests for up to " +
			"proxy.drain_timeout.",
		Flags:  concat(configFlags(), webFlags(), []cli.Flag{stringFlag(flagPinDir, "bpffs `DIR` of a running agent's pinned maps (config bpf.pin_dir)"), stringFlag(flagMode, "attribution mode: auto, bpf or fallback (config attribution.mode)")}),
		Action: func(c *cli.Context) error { return node.Run(c.Context, nodeOptions(c, node.RoleProxy)) },
	}
}
