package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/internal/node"
)

// Flag names. Each overrides the config key named in its usage; precedence
// is flag > environment > file > default.
const (
	flagConfig     = "config"
	flagLogLevel   = "log.level"
	flagLogFormat  = "log.format"
	flagListen     = "web.listen-address"
	flagWebConfig  = "web.config.file"
	flagCgroup     = "bpf.cgroup"
	flagPinDir     = "bpf.pin-dir"
	flagKeepOnExit = "bpf.keep-on-exit"
	flagMode       = "attribution.mode"
)

// envName is the environment variable of a flag: IPNG_STATS_ and the name in
// upper snake case (web.listen-address → IPNG_STATS_WEB_LISTEN_ADDRESS).
func envName(flag string) []string {
	return []string{"IPNG_STATS_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(flag))}
}

func stringFlag(name, usage string) *cli.StringFlag {
	return &cli.StringFlag{Name: name, EnvVars: envName(name), Usage: usage}
}

// configFlags: the configuration file and logging, on every command that reads the config.
func configFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: flagConfig, Aliases: []string{"c"}, EnvVars: envName(flagConfig),
			Usage: "YAML configuration `FILE` (default: the embedded default configuration)"},
		stringFlag(flagLogLevel, "log level: debug, info, warn, error (config log.level)"),
		stringFlag(flagLogFormat, "log format: logfmt, json (config log.format)"),
	}
}

func webFlags() []cli.Flag {
	return []cli.Flag{
		stringFlag(flagListen, "`HOST:PORT` of the scrape endpoint (config web.listen_address)"),
		stringFlag(flagWebConfig, "exporter-toolkit web configuration `FILE` for TLS and basic auth (config web.config_file)"),
	}
}

func bpfFlags() []cli.Flag {
	return []cli.Flag{
		stringFlag(flagCgroup, "cgroup2 `DIR` to attach the sock_ops program to (config bpf.cgroup; default the cgroup2 root)"),
		stringFlag(flagPinDir, "bpffs `DIR` for the pinned link and maps (config bpf.pin_dir)"),
		&cli.BoolFlag{Name: flagKeepOnExit, EnvVars: envName(flagKeepOnExit),
			Usage: "leave the program attached and pinned when the agent stops (config bpf.keep_on_exit)"},
		stringFlag(flagMode, "attribution mode: auto, bpf or fallback (config attribution.mode)"),
	}
}

func concat(groups ...[]cli.Flag) []cli.Flag {
	var out []cli.Flag
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// loadConfig reads --config (or the embedded default), applies the flags the
// user set, and validates the result.
func loadConfig(c *cli.Context) (*config.Config, error) {
	var (
		cfg *config.Config
		err error
	)
	if path := c.String(flagConfig); path != "" {
		cfg, err = config.Load(path)
	} else {
		cfg = config.Default()
	}
	if err != nil {
		return nil, err
	}
	str := func(name string, dst *string) {
		if c.IsSet(name) {
			*dst = c.String(name)
		}
	}
	str(flagLogLevel, &cfg.Log.Level)
	str(flagLogFormat, &cfg.Log.Format)
	str(flagListen, &cfg.Web.ListenAddress)
	str(flagWebConfig, &cfg.Web.ConfigFile)
	str(flagCgroup, &cfg.BPF.Cgroup)
	str(flagPinDir, &cfg.BPF.PinDir)
	str(flagMode, &cfg.Attribution.Mode)
	if c.IsSet(flagKeepOnExit) {
		cfg.BPF.KeepOnExit = c.Bool(flagKeepOnExit)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration (after flags and environment):\n%w", err)
	}
	// config.Validate covers what the collector checks; this keeps the two
	// from drifting apart (check, start and reload all come through here).
	if err := node.CollectorConfig(cfg).Validate(); err != nil {
		return nil, fmt.Errorf("invalid metrics configuration: %w", err)
	}
	return cfg, nil
}

// quietLogger is the logger of the one-shot commands (conns, check): their
// output is the answer, so only warnings and errors are logged, to stderr.
func quietLogger(c *cli.Context) *slog.Logger {
	return slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
