package tests

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ipng/ipng-stats/attribution"
	"github.com/ipng/ipng-stats/bindings"
	"github.com/ipng/ipng-stats/config"
	"github.com/ipng/ipng-stats/loader"
)

// The tag server is what a Go server embedding ipng-stats looks like: it
// listens on a wildcard dual-stack socket through attribution.Listen,
// follows the bindings of a config file, and answers every connection with
// one line "tag device ifindex family method", then holds the connection
// open until the client closes it. It runs as a separate process (this test
// binary re-executed) so that it lives in srv's namespace and the test
// cgroup.
const helperEnv = "IPNG_E2E_HELPER"

// Environment of the tag server.
const (
	envMode   = "IPNG_E2E_MODE"   // attribution mode
	envPins   = "IPNG_E2E_PINS"   // pin dir of the agent (modes bpf, auto)
	envConfig = "IPNG_E2E_CONFIG" // config file with the bindings
	envPort   = "IPNG_E2E_PORT"   // port to listen on
)

func tagServerMain() int {
	if err := tagServer(); err != nil {
		fmt.Fprintf(os.Stderr, "tagserver: %v\n", err)
		return 1
	}
	return 0
}

func tagServer() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	_, tags, err := helperBindings(ctx, logger)
	if err != nil {
		return err
	}
	mode, err := attribution.ParseMode(os.Getenv(envMode))
	if err != nil {
		return err
	}
	opts := attribution.Options{Mode: mode, Bindings: tags, Logger: logger}
	if mode != attribution.ModeFallback {
		maps, err := loader.OpenPinned(os.Getenv(envPins))
		if err != nil {
			return err
		}
		defer maps.Close()
		opts.Maps = maps
	}
	a, err := attribution.New(opts)
	if err != nil {
		return err
	}
	ln, err := attribution.Listen(ctx, "tcp", "[::]:"+os.Getenv(envPort), a)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Println("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			info, _ := attribution.InfoOf(c)
			dev := info.Device
			if dev == "" {
				dev = "-"
			}
			fmt.Fprintf(c, "%s %s %d %s %s\n", info.Tag, dev, info.Ifindex, info.Family, info.Method)
			io.Copy(io.Discard, bufio.NewReader(c))
		}()
	}
}

// helperBindings is the start of every helper process: the config file of
// IPNG_E2E_CONFIG and a bindings resolver following the links of the
// helper's network namespace until ctx is done.
func helperBindings(ctx context.Context, logger *slog.Logger) (*config.Config, *bindings.Resolver, error) {
	cfg, err := config.Load(os.Getenv(envConfig))
	if err != nil {
		return nil, nil, err
	}
	spec, err := cfg.BindingsSpec()
	if err != nil {
		return nil, nil, err
	}
	tags := bindings.NewResolver(spec, logger)
	go tags.Run(ctx, bindings.DefaultRescan)
	if err := tags.Scan(); err != nil {
		return nil, nil, err
	}
	return cfg, tags, nil
}
