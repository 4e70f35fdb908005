package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// Set by the Makefile: -ldflags "-X main.version=... -X main.revision=...".
var (
	version  = "dev"
	revision = ""
)

func buildRevision() string {
	if revision != "" {
		return revision
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

func versionString() string {
	return fmt.Sprintf("%s (revision %s, %s %s/%s)", version, buildRevision(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print version, revision and Go version",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "ipng-stats %s\n", versionString())
			return nil
		},
	}
}
