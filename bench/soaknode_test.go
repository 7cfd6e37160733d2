package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	sipwire "github.com/sipwake/sipwake/internal/sip"
)

// soakNodeEnv, set to a record TTL, makes the bench binary a sipwake node
// (TestMain calls runSoakNode) instead of a test run. The soak needs
// records that expire within minutes, so that sweeps happen during the
// run, and cmd/sipwake rightly refuses a store.record_ttl under 72h; so
// each soak node is this binary re-executed: cmd/sipwake's serve (config
// from the same SIPWAKE_* variables, the runtime and sipgo knobs, app
// New/Start, SIGTERM, a drain-bounded Stop) with that one field changed.
// Not SIPWAKE_*: the node's strict config loader would refuse it.
const soakNodeEnv = "BENCH_SOAK_NODE_RECORD_TTL"

// runSoakNode runs one node until SIGTERM and returns the exit code.
func runSoakNode(ttl string) int {
	if err := serveSoakNode(ttl); err != nil {
		fmt.Fprintln(os.Stderr, "soak node:", err)
		return 1
	}
	return 0
}

func serveSoakNode(ttl string) error {
	d, err := time.ParseDuration(ttl)
	if err != nil {
		return fmt.Errorf("%s: %w", soakNodeEnv, err)
	}
	cfg, err := config.Load("", os.Environ())
	if err != nil {
		return err
	}
	cfg.Store.RecordTTL = d
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level))
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	app.ConfigureRuntime(cfg.Runtime, log)
	sipwire.ConfigureLibrary(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		_ = a.Stop(context.WithoutCancel(ctx))
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Shutdown.DrainTimeout)
	defer cancel()
	return a.Stop(sctx)
}
