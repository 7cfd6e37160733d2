// Command sipwake runs the push relay for SIP softphones.
//
//	sipwake [-config FILE]           run (defaults: bbolt in ./data, SIP on 127.0.0.1:5060)
//	sipwake config check [-config F] validate a config and print it, secrets redacted
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	sipwire "github.com/sipwake/sipwake/internal/sip"
)

// stopTimeout bounds a graceful shutdown.
const stopTimeout = 10 * time.Second

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "sipwake:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) >= 2 && args[0] == "config" && args[1] == "check" {
		cfg, err := loadConfig(args[2:], stderr)
		if err != nil {
			return err
		}
		out, err := config.Dump(cfg)
		if err != nil {
			return err
		}
		_, err = fmt.Fprint(stdout, out)
		return err
	}
	cfg, err := loadConfig(args, stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, stderr)
	// sipgo's package-level logger, set once here: its stray messages go
	// through the same redaction as the rest of the SIP side.
	sipgo.SetDefaultLogger(sipwire.RedactedLogger(log))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	a, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		_ = a.Stop(context.Background())
		return err
	}
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	return a.Stop(sctx)
}

func loadConfig(args []string, stderr io.Writer) (config.Config, error) {
	fs := flag.NewFlagSet("sipwake", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file (YAML); every key can also be set as SIPWAKE_<PATH>")
	if err := fs.Parse(args); err != nil {
		return config.Config{}, err
	}
	if fs.NArg() > 0 {
		return config.Config{}, errors.New("unexpected argument " + fs.Arg(0))
	}
	return config.Load(*path, os.Environ())
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
