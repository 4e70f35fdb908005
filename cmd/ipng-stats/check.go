package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/exporter"
	"github.com/ipng/ipng-stats/internal/node"
	"github.com/ipng/ipng-stats/loader"
)

// Exit codes of `ipng-stats check`.
const (
	checkOK        = 0 // everything the configuration asks for works here
	checkBadConfig = 1 // the configuration is invalid
	checkFailed    = 2 // valid, but the agent would fail or attribution would not work as configured
)

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "validate the configuration, bind its listeners and, when privileged, load, attach and detach the BPF program (like nginx -t)",
		Description: "Prints one line per check. Exit status: 0 when everything works, 1 when the configuration is " +
			"invalid, 2 when it is valid but something the agent needs does not work here (the BPF program cannot " +
			"be loaded in mode bpf, the cgroup does not exist, bpf.pin_dir is not on a bpf filesystem, web.listen_address or a proxy listener cannot be " +
			"bound, ...). Pins of a running agent are not touched; an address a running ipng-stats holds is a warning.",
		Flags:  concat(configFlags(), webFlags(), bpfFlags()),
		Action: runCheck,
	}
}

func runCheck(c *cli.Context) error {
	w := c.App.Writer
	cfg, err := loadConfig(c)
	if err != nil {
		fmt.Fprintf(w, "FAIL  config %s\n", configName(c))
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(w, "      %s\n", line)
		}
		return &exitError{checkBadConfig, errors.New("configuration is invalid")}
	}
	fmt.Fprintf(w, "ok    config %s\n", configName(c))
	failed := checkBindings(w, cfg, quietLogger(c))
	pinOK := checkPinDir(w, cfg)
	if !pinOK {
		failed = true
	}
	if !checkBPF(w, cfg, pinOK) {
		failed = true
	}
	if !checkWeb(w, cfg) {
		failed = true
	}
	if !checkListeners(w, cfg) {
		failed = true
	}
	if !checkHandshakes(w, cfg, quietLogger(c)) {
		failed = true
	}
	if failed {
		return &exitError{checkFailed, errors.New("some checks failed")}
	}
	fmt.Fprintln(w, "ok    all checks passed")
	return nil
}

// checkBindings resolves the bound devices now. An absent device is a
// warning: it is bound as soon as it appears.
func checkBindings(w io.Writer, cfg *config.Config, logger *slog.Logger) (failed bool) {
	spec, err := cfg.BindingsSpec()
	if err != nil {
		fmt.Fprintf(w, "FAIL  bindings: %v\n", err)
		return true
	}
	tags := bindings.NewResolver(spec, logger)
	if err := tags.Scan(); err != nil {
		fmt.Fprintf(w, "FAIL  bindings: listing links: %v\n", err)
		return true
	}
	for _, b := range tags.Table().Bound() {
		desc := fmt.Sprintf("binding %s (%s) -> %s", b.Binding.Device, b.Binding.Family, b.Binding.EffectiveTag())
		if b.Present {
			fmt.Fprintf(w, "ok    %s: ifindex %d\n", desc, b.Ifindex)
		} else {
			fmt.Fprintf(w, "warn  %s: no such device now; it is bound when it appears\n", desc)
		}
	}
	fmt.Fprintf(w, "ok    default tag %q for every other interface\n", spec.DefaultTag)
	return false
}

// checkBPF loads and attaches the program with private maps and detaches it.
// pinOK is checkPinDir's verdict: without a usable pin directory the
// attribution mode is not reported as working.
func checkBPF(w io.Writer, cfg *config.Config, pinOK bool) (ok bool) {
	mode, _ := attribution.ParseMode(cfg.Attribution.Mode) // validated by config
	if mode == attribution.ModeFallback {
		fmt.Fprintln(w, "ok    attribution mode fallback: IP_PKTINFO, no BPF needed")
		return true
	}
	if missing, err := loader.MissingCapabilities(); err != nil || len(missing) > 0 {
		why := fmt.Sprintf("missing %s", strings.Join(missing, ", "))
		if err != nil {
			why = err.Error()
		}
		if mode == attribution.ModeBPF {
			fmt.Fprintf(w, "FAIL  bpf: cannot load the program (%s); attribution mode bpf needs it\n", why)
			return false
		}
		fmt.Fprintf(w, "skip  bpf: not privileged (%s); the agent needs them, or falls back to IP_PKTINFO in mode auto\n", why)
		return true
	}
	cgroup, err := loader.Probe(node.LoaderConfig(cfg))
	if err != nil {
		if mode == attribution.ModeBPF {
			fmt.Fprintf(w, "FAIL  bpf: %v\n", err)
			return false
		}
		fmt.Fprintf(w, "warn  bpf: %v\n      mode auto: the agent would fall back to IP_PKTINFO\n", err)
		return true
	}
	fmt.Fprintf(w, "ok    bpf: sock_ops program loaded, attached to cgroup %s and detached\n", cgroup)
	if pinOK {
		fmt.Fprintf(w, "ok    attribution mode %s: BPF socket stamps\n", mode)
	}
	return true
}

// checkWeb validates the exporter's settings: the metrics configuration and
// the exporter-toolkit web configuration file (TLS certificates, users).
func checkWeb(w io.Writer, cfg *config.Config) (ok bool) {
	col, err := collector.New(node.CollectorConfig(cfg), collector.Options{})
	if err == nil {
		_, err = exporter.New(exporter.Options{ListenAddress: cfg.Web.ListenAddress, WebConfigFile: cfg.Web.ConfigFile, Collector: col})
	}
	if err != nil {
		fmt.Fprintf(w, "FAIL  web: %v\n", err)
		return false
	}
	auth := "plain HTTP"
	if cfg.Web.ConfigFile != "" {
		auth = "web config " + cfg.Web.ConfigFile
	}
	fmt.Fprintf(w, "ok    web: metrics on %s (%s)\n", cfg.Web.ListenAddress, auth)
	return true
}
