// Command ipng-stats is the per-interface, per-VIP HTTP accounting agent.
// This package only parses flags and configuration: `agent` and `proxy` are
// one call each into the node builder (internal/node), and the one-shot
// commands (check, conns, detach, top, ...) call their packages directly.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "ipng-stats: %v\n", err)
		os.Exit(exitCode(err))
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "ipng-stats",
		Usage: "per-interface, per-VIP HTTP traffic accounting",
		Description: "ipng-stats attributes every accepted TCP connection to the interface it arrived on " +
			"(GRE/vxlan tunnels, VLANs, bonds, ethernet) with an eBPF sock_ops program, maps interfaces to " +
			"source tags, and exports per (source_tag, vip, code) counters to Prometheus.",
		Version:              versionString(),
		HideVersion:          true,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			agentCommand(),
			connsCommand(),
			checkCommand(),
			detachCommand(),
			proxyCommand(),
			topCommand(),
			nginxSnippetCommand(),
			versionCommand(),
			manCommand(),
		},
	}
}

// exitError carries a documented exit code (see `ipng-stats check --help`).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if e, ok := err.(*exitError); ok {
		return e.code
	}
	return 1
}
