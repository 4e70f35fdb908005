package connstats

import (
	"log/slog"

	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/loader"
)

// Start wires the agent's connection tracking to its loaded program: it
// gives the source tags ids the program stamps at accept (a
// loader.TagTable kept in step with every new bindings table of tags),
// counts what the program counted so far, and returns refresh, which adds
// the kernel's connection counts to col (the collector's Sources.Refresh:
// it runs at every snapshot, scrape, JSON or status page, and nothing else
// reads them), and names, which names the tag ids of stamps.
func Start(col *collector.Collector, tags *bindings.Resolver, maps *loader.Maps, logger *slog.Logger) (refresh func(), names func(uint32) (string, bool), err error) {
	ids, err := loader.NewTagTable(maps)
	if err != nil {
		return nil, nil, err
	}
	// The program stamps each connection with its interface's tag at
	// accept: it learns every new bindings table at once.
	tags.OnChange(func(t *bindings.Table) {
		if err := ids.Sync(Ifaces(t)); err != nil {
			logger.Warn("telling the program the interfaces' tags (connections on them get their tag when counted instead)", "err", err)
		}
	})
	tr := New(col, tags, ids.Name, maps.ReadConns)
	refresh = func() {
		if err := tr.Sync(); err != nil {
			logger.Warn("reading the program's connection counts", "err", err)
		}
	}
	refresh()
	return refresh, ids.Name, nil
}

// Ifaces is what the program is told about the links of t
// (loader.TagTable.Sync): the tag and device of each, for IPv4 and IPv6.
func Ifaces(t *bindings.Table) []loader.Iface {
	out := make([]loader.Iface, 0, 2*len(t.Links()))
	for _, l := range t.Links() {
		for _, fam := range []bindings.Family{bindings.FamilyIPv4, bindings.FamilyIPv6} {
			r := t.Lookup(l.Index, fam)
			out = append(out, loader.Iface{Ifindex: l.Index, Family: fam, Device: l.Name, Tag: r.Tag, Bound: r.Bound})
		}
	}
	return out
}
