package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/ipng/ipng-stats/collector"
	"github.com/ipng/ipng-stats/internal/testenv/fixtures"
	"github.com/ipng/ipng-stats/loader"
	"github.com/ipng/ipng-stats/nginxlog"
)

// The nginx ingest helper is what `ipng-stats agent` runs for the nginx:
// section once it is wired in: the collector, the bindings resolver, the
// agent's pinned maps and nginxlog.Ingest, in srv's namespace. It is this
// test binary re-executed (selected in init, before TestMain), so that tests
// can SIGSTOP, restart and kill it independently of the agent. It serves
// its state as JSON on 127.0.0.1:$IPNG_E2E_NGINX_STATE and prints "ready"
// when it consumes, and its final state as one JSON line when it stops.
const (
	envNginxHelper = "IPNG_E2E_NGINX_HELPER"
	envNginxState  = "IPNG_E2E_NGINX_STATE" // port of the state endpoint
)

// nginxState is what the helper reports.
type nginxState struct {
	Requests  map[string]uint64 // "tag vip code" → requests
	Rejected  map[string]uint64
	Fallbacks map[string]uint64
	Stats     nginxlog.Stats
}

func init() {
	if os.Getenv(envNginxHelper) == "" {
		return
	}
	if err := nginxHelper(); err != nil {
		fmt.Fprintf(os.Stderr, "nginx helper: %v\n", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func nginxHelper() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, tags, err := helperBindings(ctx, logger)
	if err != nil {
		return err
	}
	maps, err := loader.OpenPinned(os.Getenv(envPins))
	if err != nil {
		return err
	}
	defer maps.Close()
	coll, err := collector.New(collector.Config{}, collector.Options{Logger: logger,
		RejectReasons: nginxlog.RejectReasons(), FallbackReasons: nginxlog.FallbackReasons()})
	if err != nil {
		return err
	}
	in, err := nginxlog.New(cfg.Nginx, nginxlog.Deps{Collector: coll, Bindings: tags, Maps: maps, TagNames: maps.PinnedTagNames(), Logger: logger})
	if err != nil {
		return err
	}
	state := func() nginxState {
		// The ingest's counters first, the collector's after: a line is
		// counted in Stats.Lines before it is recorded, in Stats.Recorded
		// after, so Recorded never runs ahead of the snapshot.
		stats := in.Stats()
		snap := coll.Snapshot(collector.Filter{})
		return nginxState{Requests: fixtures.Requests(snap), Rejected: snap.Meta.OutcomesRejected,
			Fallbacks: snap.Meta.AttributionFallbacks, Stats: stats}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv(envNginxState))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(state())
	})}
	go srv.Serve(ln)
	defer srv.Close()
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	fmt.Println("ready")
	err = <-done
	b, _ := json.Marshal(state())
	fmt.Printf("final %s\n", b)
	return err
}
