package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/top"
)

func topCommand() *cli.Command {
	sorts := []string{}
	for k := top.SortRate; k <= top.SortTag; k++ {
		sorts = append(sorts, k.String())
	}
	return &cli.Command{
		Name:  "top",
		Usage: "watch an agent's traffic per source tag and VIP in the terminal",
		Description: "Reads the JSON document of a local or remote agent (or `ipng-stats proxy`) every second and shows " +
			"requests per second, code classes, latency, bytes and connections per (source_tag, vip), with the " +
			"agent's health. Keys: s cycles the sort (r rate, n requests, l p99, e 5xx, t tag), / filters by tag or " +
			"VIP, v toggles per-VIP and per-tag rows, q quits. --once prints one plain-text snapshot for scripts. " +
			"Basic auth: user:password in --url, or basic_auth in --http.config.file (the Prometheus HTTP client " +
			"configuration promtool takes, also for TLS: tls_config ca_file, cert_file, key_file, insecure_skip_verify).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "url", Value: top.DefaultURL, EnvVars: envName("top.url"),
				Usage: "the agent's metrics `URL` (its base, or the full path of the JSON document)"},
			stringFlag("http.config.file", "Prometheus HTTP client configuration `FILE` (basic_auth, authorization, tls_config)"),
			&cli.BoolFlag{Name: "once", Usage: "print one plain-text snapshot and exit"},
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "refresh `INTERVAL`"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Second, Usage: "HTTP request `TIMEOUT`"},
			&cli.StringFlag{Name: "sort", Value: "rate", Usage: "sort by `KEY`: " + strings.Join(sorts, ", ")},
			&cli.BoolFlag{Name: "per-tag", Usage: "one row per source tag instead of per (source_tag, vip)"},
			&cli.StringFlag{Name: "filter", Usage: "show only rows whose tag or VIP contains `TEXT`"},
			&cli.IntFlag{Name: "width", Usage: "with --once: fit the table to `COLUMNS` (0: no limit)"},
			&cli.BoolFlag{Name: "no-color", EnvVars: []string{"NO_COLOR"}, Usage: "no colours (also when NO_COLOR is set)"},
		},
		Action: runTop,
	}
}

func runTop(c *cli.Context) error {
	src, err := top.NewSource(c.String("url"), c.String("http.config.file"), c.Duration("timeout"))
	if err != nil {
		return err
	}
	v := top.View{PerTag: c.Bool("per-tag"), Filter: c.String("filter")}
	if v.Sort, err = top.ParseSort(c.String("sort")); err != nil {
		return err
	}
	if c.Bool("once") {
		d, err := src.Fetch(c.Context)
		if err != nil {
			return err
		}
		_, err = fmt.Fprint(c.App.Writer, top.Snapshot(d, v, c.Int("width"), top.Styles{}))
		return err
	}
	for _, f := range []*os.File{os.Stdin, os.Stdout} {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
			return fmt.Errorf("top needs a terminal on standard input and output (%s is not one); use --once for scripts", f.Name())
		}
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return top.Run(ctx, top.Options{Source: src, Interval: c.Duration("interval"), View: v,
		NoColour: c.Bool("no-color"), In: os.Stdin, Out: c.App.Writer})
}
