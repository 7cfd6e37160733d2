package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/sipwake/sipwake/internal/admin"
	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/fcm"
	"github.com/sipwake/sipwake/internal/push/pn"
	"github.com/sipwake/sipwake/internal/store"
)

// healthTimeout bounds `sipwake healthcheck` (the image's HEALTHCHECK).
const healthTimeout = 3 * time.Second

// noArgs is the argument check of a command without flags: -h asks for
// its (empty) usage.
func noArgs(name string, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help":
			return flag.ErrHelp
		}
		return fmt.Errorf("%s: unexpected argument %s", name, args[0])
	}
	return nil
}

func (c cli) keysGenerate(args []string) error {
	if err := noArgs("keys generate", args); err != nil {
		return err
	}
	_, err := fmt.Fprintln(c.stdout, base64.StdEncoding.EncodeToString(store.NewKey()))
	return err
}

func (c cli) keysUsage(ctx context.Context, args []string) error {
	cfg, _, err := c.loadConfig("keys usage", args, nil)
	if err != nil {
		return err
	}
	usage, err := app.KeyUsage(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(usage))
	for id := range usage {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		role := "previous"
		switch {
		case id == cfg.Seal.KeyID:
			role = "active"
		case !isPrevious(cfg, id):
			role = "unknown (not configured)"
		}
		if _, err := fmt.Fprintf(c.stdout, "%s\t%d records\t%s\n", id, usage[id], role); err != nil {
			return err
		}
	}
	return nil
}

func isPrevious(cfg config.Config, id string) bool {
	for _, p := range cfg.Seal.Previous {
		if p.ID == id {
			return true
		}
	}
	return false
}

func (c cli) adminToken(args []string) error {
	if err := noArgs("admin token", args); err != nil {
		return err
	}
	tok := admin.NewToken()
	_, err := fmt.Fprintf(c.stdout, "token: %s\ntoken_sha256: %s\n", tok, admin.HashToken(tok))
	return err
}

// adminHashToken reads the token from stdin, so it stays out of the shell
// history and the process list.
func (c cli) adminHashToken(args []string) error {
	if err := noArgs("admin hash-token", args); err != nil {
		return err
	}
	line, err := bufio.NewReader(c.stdin).ReadString('\n')
	tok := strings.TrimSpace(line)
	if tok == "" {
		if err == nil {
			err = errors.New("empty")
		}
		return fmt.Errorf("admin hash-token: read the token on stdin: %w", err)
	}
	_, err = fmt.Fprintln(c.stdout, admin.HashToken(tok))
	return err
}

func (c cli) pushTest(ctx context.Context, args []string) error {
	var provider, token, appName, kind string
	cfg, _, err := c.loadConfig("push test", args, func(fs *flag.FlagSet) {
		fs.StringVar(&provider, "provider", "", "apns or fcm")
		fs.StringVar(&token, "token", "", "device push token (an APNs token is taken as a PushKit token for -kind call, else as a remote one; add :voip or :remote to say which)")
		fs.StringVar(&appName, "app", "", "push.apps name (needed when several apps serve the provider)")
		fs.StringVar(&kind, "kind", "call", "call, cancel, message, register or expiry_warning")
	})
	if err != nil {
		return err
	}
	k, ok := pn.ParseKind(kind)
	if !ok {
		return fmt.Errorf("push test: -kind %q: want call, cancel, message, register or expiry_warning", kind)
	}
	log := newLogger(cfg.Log, c.stderr)
	return push.RunTestPush(ctx, cfg.Push, provider, token, appName, k, c.stdout, log, push.WithFCM(fcm.New))
}

// healthcheck GETs /healthz (or /readyz with -ready) on the admin listener.
// It is the image's HEALTHCHECK: distroless has no curl.
func (c cli) healthcheck(ctx context.Context, args []string) error {
	var url string
	var ready bool
	cfg, _, err := c.loadConfig("healthcheck", args, func(fs *flag.FlagSet) {
		fs.StringVar(&url, "url", "", "base URL of the admin listener (default: from admin.listen)")
		fs.BoolVar(&ready, "ready", false, "check /readyz instead of /healthz")
	})
	if err != nil {
		return err
	}
	if url == "" {
		listen := cfg.Admin.Listen
		if listen == "" {
			return errors.New("healthcheck: admin.listen is empty; set it (e.g. " + config.DefaultAdminListen + ") or pass -url")
		}
		scheme := "http"
		if cfg.Admin.TLSCertFile != "" {
			scheme = "https"
		}
		url = scheme + "://" + listen
	}
	path := "/healthz"
	if ready {
		path = "/readyz"
	}
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+path, nil)
	if err != nil {
		return err
	}
	// The probe runs beside the server and sends nothing secret; the
	// certificate is made for the public name, not for the probe's address.
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec
	res, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: %s answered %s", path, res.Status)
	}
	_, err = fmt.Fprintln(c.stdout, "ok")
	return err
}
