package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/ipng/ipng-stats/loader"
)

func detachCommand() *cli.Command {
	return &cli.Command{
		Name:  "detach",
		Usage: "remove the pinned link and maps left by an agent run with bpf.keep_on_exit (detaches the program)",
		Flags: concat(configFlags(), []cli.Flag{stringFlag(flagPinDir, "bpffs `DIR` of the pins (config bpf.pin_dir)")}),
		Action: func(c *cli.Context) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			if err := loader.Detach(cfg.BPF.PinDir); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "removed pins in %s\n", cfg.BPF.PinDir)
			return nil
		},
	}
}
