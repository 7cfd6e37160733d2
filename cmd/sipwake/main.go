// Command sipwake runs the push relay for SIP softphones.
//
//	sipwake [-config FILE]                  run until SIGTERM (drain) ; SIGHUP reloads TLS certs and push credentials
//	sipwake config check [-config F]        validate a config and print it, secrets redacted
//	sipwake keys generate                   print a new sealing key (32 random bytes, base64)
//	sipwake keys usage [-config F]          records per sealing key of a stopped instance
//	sipwake admin token                     print a new admin bearer token and its SHA-256
//	sipwake admin hash-token                read a token on stdin, print its SHA-256 (admin.token_sha256)
//	sipwake push test -provider P -token T [-app A] [-kind call|cancel|message|register|expiry_warning] [-config F]
//	sipwake healthcheck [-config F] [-url U] [-ready]  exit 0 if the admin listener answers 200
//	sipwake version                         version, commit and Go version
//	sipwake help [COMMAND]                  the commands, or one command's flags (also -h, --help)
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

	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	sipwire "github.com/sipwake/sipwake/internal/sip"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	c := cli{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, environ: os.Environ(), hup: hup, stopSignals: stop}
	err := c.run(ctx, os.Args[1:])
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sipwake:", err)
		os.Exit(1)
	}
}

// cli is one invocation: its streams, environment and signals, so tests run
// it in-process.
type cli struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	environ        []string
	// hup delivers SIGHUP (reload); nil in most tests.
	hup <-chan os.Signal
	// stopSignals, called once shutdown starts, lets a second SIGTERM kill
	// the process the default way; may be nil.
	stopSignals func()
}

func (c cli) run(ctx context.Context, args []string) error {
	return c.dispatch(ctx, args)
}

func (c cli) configCheck(args []string) error {
	cfg, _, err := c.loadConfig("config check", args, nil)
	if err != nil {
		return err
	}
	out, err := config.Dump(cfg)
	if err != nil {
		return err
	}
	_, err = fmt.Fprint(c.stdout, out)
	return err
}

// serve runs sipwake until ctx ends, then drains within
// shutdown.drain_timeout and returns nil on a clean stop (exit 0).
func (c cli) serve(ctx context.Context, args []string) error {
	cfg, path, err := c.loadConfig("sipwake", args, nil)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Log, c.stderr)
	// Process-wide knobs, set once here: the Go runtime's memory limit and
	// GC pace, and sipgo's (UDP size limit, transaction linger, its stray
	// log messages redacted like the rest of the SIP side).
	app.ConfigureRuntime(cfg.Runtime, log)
	sipwire.ConfigureLibrary(log)

	a, err := app.New(cfg, log)
	if err != nil {
		return err
	}
	if err := a.Start(ctx); err != nil {
		_ = a.Stop(context.WithoutCancel(ctx))
		return err
	}
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-c.hup:
			c.reload(ctx, a, path, log)
		}
	}
	if c.stopSignals != nil {
		c.stopSignals()
	}
	log.Info("shutting down: draining parked calls", "bound", cfg.Shutdown.DrainTimeout)
	// ctx is done by now; the drain gets its own bound, keeping ctx's values.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Shutdown.DrainTimeout)
	defer cancel()
	return a.Stop(sctx)
}

// reload re-reads the config file and applies what can change live.
func (c cli) reload(ctx context.Context, a *app.App, path string, log *slog.Logger) {
	log.Info("SIGHUP: reloading TLS certificates and push credentials", "config", path)
	cfg, err := config.Load(path, c.environ)
	if err != nil {
		log.Error("reload: config invalid; keeping the running settings", "error", err)
		return
	}
	if err := a.Reload(ctx, cfg); err != nil {
		return // logged by Reload
	}
	log.Info("reload done")
}

// loadConfig parses -config (and the flags extra adds) and loads the config.
func (c cli) loadConfig(name string, args []string, extra func(*flag.FlagSet)) (config.Config, string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	path := fs.String("config", "", "config file (YAML); every key can also be set as SIPWAKE_<PATH>")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return config.Config{}, "", err
	}
	if fs.NArg() > 0 {
		return config.Config{}, "", errors.New("unexpected argument " + fs.Arg(0))
	}
	cfg, err := config.Load(*path, c.environ)
	return cfg, *path, err
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
