package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/ipng/ipng-stats/internal/node"
	"github.com/ipng/ipng-stats/loader"
)

func connsCommand() *cli.Command {
	return &cli.Command{
		Name:  "conns",
		Usage: "list open accepted TCP connections with the interface they arrived on and their source tag",
		Description: "Reads the maps the agent pinned (read-only; no privilege needed). Each connection shows the source tag " +
			"and device its interface had when it was accepted (what its requests are counted under); connections " +
			"the program could not tag at accept are resolved with the configured bindings in the current network namespace. Only connections of the current network " +
			"namespace are listed unless --all-namespaces is given.",
		Flags: concat(configFlags(), []cli.Flag{
			stringFlag(flagPinDir, "bpffs `DIR` of the pinned maps (config bpf.pin_dir)"),
			&cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "list connections of every network namespace"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output format: table or json"},
		}),
		Action: runConns,
	}
}

type connRow struct {
	Local   string  `json:"local"`
	Remote  string  `json:"remote"`
	Family  string  `json:"family"`
	Ifindex uint32  `json:"ifindex"`
	Device  string  `json:"device"`
	Tag     string  `json:"source_tag"`
	Bound   bool    `json:"bound"`
	AgeSec  float64 `json:"age_seconds"`
	Netns   uint64  `json:"netns_cookie"`
	Cookie  uint64  `json:"cookie"`
	stamped time.Duration
}

func runConns(c *cli.Context) error {
	out := c.String("output")
	if out != "table" && out != "json" {
		return fmt.Errorf("--output %q: want table or json", out)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	maps, err := loader.OpenPinned(cfg.BPF.PinDir)
	if err != nil {
		return err
	}
	defer maps.Close()
	stamps, err := maps.LiveStamps()
	if err != nil {
		return err
	}
	tags, err := node.NewBindings(cfg, quietLogger(c))
	if err != nil {
		return err
	}
	own, err := loader.NetnsCookie()
	if err != nil {
		return err
	}
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil {
		return fmt.Errorf("reading clock: %w", err)
	}
	table := tags.Table()
	names := maps.PinnedTagNames()
	rows := make([]connRow, 0, len(stamps))
	for _, s := range stamps {
		if s.NetnsCookie != own && !c.Bool("all-namespaces") {
			continue
		}
		row := connRow{
			Local: s.Local.String(), Remote: s.Remote.String(), Family: s.Family.String(),
			Ifindex: s.Ifindex, Netns: s.NetnsCookie, Cookie: s.Cookie, stamped: s.StampedAt,
			AgeSec: (time.Duration(now.Nano()) - s.StampedAt).Seconds(),
		}
		if tag, ok := names(s.TagID); ok && s.TagID != 0 {
			// The tag the interface had when the connection was accepted,
			// which is what its requests and its count are recorded under.
			row.Device, row.Tag, row.Bound = s.Device.String(), tag, s.Bound
		} else if s.NetnsCookie == own {
			r := table.Lookup(s.Ifindex, s.Family)
			row.Device, row.Tag, row.Bound = r.Device, r.Tag, r.Bound
		} else {
			// Interfaces of another namespace are not ours to name.
			row.Device, row.Tag = "?", "?"
		}
		rows = append(rows, row)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].stamped < rows[j].stamped })
	if out == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(rows)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOCAL\tREMOTE\tFAMILY\tIFINDEX\tDEVICE\tSOURCE_TAG\tAGE")
	for _, r := range rows {
		dev := r.Device
		if dev == "" {
			dev = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Local, r.Remote, r.Family, r.Ifindex, dev, r.Tag,
			time.Duration(r.AgeSec*float64(time.Second)).Round(time.Second))
	}
	return tw.Flush()
}
