package main

import (
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/node"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the node agent: load and attach the sock_ops program, follow interface bindings, export metrics",
		Description: "Without --config the agent runs on the embedded default configuration (no device bindings: " +
			"every connection is tagged \"direct\"). Metrics are served on web.listen_address (:9113) at " +
			"/.well-known/ipng/statsz and /metrics. SIGHUP reloads the configuration file (bindings, log level, " +
			"metrics.max_series); SIGTERM or SIGINT stops the agent, detaching the program unless " +
			"bpf.keep_on_exit is set.",
		Flags:  concat(configFlags(), webFlags(), bpfFlags()),
		Action: func(c *cli.Context) error { return node.Run(c.Context, nodeOptions(c, node.RoleAgent)) },
	}
}

// nodeOptions are the node builder's options of the agent and proxy
// commands: the configuration as the flags and environment make it, read
// again on every SIGHUP.
func nodeOptions(c *cli.Context, role node.Role) node.Options {
	return node.Options{
		Role:       role,
		Load:       func() (*config.Config, error) { return loadConfig(c) },
		ConfigName: configName(c),
		LogOutput:  c.App.ErrWriter,
		Version:    versionString(),
		Build:      collector.BuildInfo{Version: version, Revision: buildRevision(), GoVersion: runtime.Version()},
	}
}

func configName(c *cli.Context) string {
	if p := c.String(flagConfig); p != "" {
		return p
	}
	return "(embedded default)"
}
