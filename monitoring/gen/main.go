// Command gen writes the monitoring bundle (dashboards, recording rules,
// alerts) into a directory, by default deploy/monitoring: `make generate`
// runs it. With -config, thresholds are read from a YAML file of
// monitoring.Config fields over the defaults.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/ipng/ipng-stats/monitoring"
)

func main() {
	out := flag.String("out", "deploy/monitoring", "directory to write the bundle into")
	cfgPath := flag.String("config", "", "YAML file of thresholds over the defaults (monitoring.Config)")
	flag.Parse()
	if err := run(*out, *cfgPath); err != nil {
		fmt.Fprintf(os.Stderr, "gen: %v\n", err)
		os.Exit(1)
	}
}

func run(out, cfgPath string) error {
	cfg := monitoring.DefaultConfig()
	if cfgPath != "" {
		var err error
		if cfg, err = monitoring.LoadConfig(cfgPath); err != nil {
			return err
		}
	}
	files, err := monitoring.Files(cfg)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := filepath.Join(out, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return fmt.Errorf("creating %q: %w", filepath.Dir(path), err)
		}
		if err := os.WriteFile(path, files[name], 0o644); err != nil {
			return fmt.Errorf("writing %q: %w", path, err)
		}
	}
	return nil
}
