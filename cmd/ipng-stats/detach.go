package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/loader"
)

func detachCommand() *cli.Command {
	return &cli.Command{
		Name:  "detach",
		Usage: "remove the pinned link and maps left by an agent run with bpf.keep_on_exit (detaches the program)",
		Description: "Says which pins it removed, or that nothing was pinned in the directory. Exit status: 0 when " +
			"nothing is pinned there afterwards (including when nothing was pinned, so that it can run " +
			"unconditionally, e.g. on package removal), 1 when a pin could not be removed.",
		Flags:  concat(configFlags(), []cli.Flag{stringFlag(flagPinDir, "bpffs `DIR` of the pins (config bpf.pin_dir)")}),
		Action: runDetach,
	}
}

func runDetach(c *cli.Context) error {
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	dir := cfg.BPF.PinDir
	before, err := dirEntries(dir)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(c.App.Writer, "nothing pinned in %s: no such directory\n", dir)
		return nil
	}
	if err != nil {
		return fmt.Errorf("pin directory: %w", err)
	}
	if err := loader.Detach(dir); err != nil {
		return err
	}
	after, err := dirEntries(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pin directory: %w", err)
	}
	var removed []string
	for _, name := range before {
		if !slices.Contains(after, name) {
			removed = append(removed, name)
		}
	}
	if len(removed) == 0 {
		fmt.Fprintf(c.App.Writer, "nothing pinned in %s\n", dir)
	} else {
		fmt.Fprintf(c.App.Writer, "removed pins in %s: %s\n", dir, strings.Join(removed, ", "))
	}
	if len(after) > 0 {
		fmt.Fprintf(c.App.Writer, "left %s in place: not pins of ipng-stats\n", strings.Join(after, ", "))
	}
	return nil
}

// dirEntries lists the names in dir.
func dirEntries(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}
