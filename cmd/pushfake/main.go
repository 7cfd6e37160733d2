// Command pushfake runs the fake APNs and FCM services from
// internal/push/pushtest on loopback addresses for load and end-to-end
// scripts. It writes the credential files and a ready `push:` config section
// into -dir, prints every push it receives as one JSON line on stdout, and
// exits on SIGTERM or SIGINT.
//
//	pushfake -apns 127.0.0.1:8443 -fcm 127.0.0.1:8444 -dir /tmp/pushfake
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"gopkg.in/yaml.v3"

	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pushfake:", err)
		os.Exit(1)
	}
}

func run() error {
	apnsAddr := flag.String("apns", "127.0.0.1:8443", "fake APNs listen address (empty: off)")
	fcmAddr := flag.String("fcm", "127.0.0.1:8444", "fake FCM listen address (empty: off)")
	dir := flag.String("dir", "pushfake", "directory for keys, CA certificates, service account and push-config.yaml")
	bundle := flag.String("bundle", "org.sipwake.test", "APNs bundle id the fake accepts")
	project := flag.String("project", "sipwake-test", "Firebase project id the fake serves")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}

	var mu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	print := func(p pushtest.Push) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(p)
	}

	var cfg push.Config
	if *apnsAddr != "" {
		f, err := pushtest.StartAPNs(pushtest.APNsOptions{Addr: *apnsAddr, Dir: *dir, BundleID: *bundle, OnPush: print})
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.Apps = append(cfg.Apps, f.App("ios"))
		log.Info("fake APNs listening", "url", f.URL, "pn_param", f.Param(), "key_file", f.KeyFile, "ca_file", f.CAFile)
	}
	if *fcmAddr != "" {
		f, err := pushtest.StartFCM(pushtest.FCMOptions{Addr: *fcmAddr, Dir: *dir, ProjectID: *project, OnPush: print})
		if err != nil {
			return err
		}
		defer f.Close()
		cfg.Apps = append(cfg.Apps, f.App("android"))
		log.Info("fake FCM listening", "url", f.URL, "pn_param", f.ProjectID, "credentials_file", f.CredentialsFile, "ca_file", f.CAFile)
	}
	b, err := yaml.Marshal(map[string]push.Config{"push": cfg})
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(*dir, "push-config.yaml")
	if err := os.WriteFile(cfgFile, b, 0o600); err != nil {
		return err
	}
	log.Info("push config written", "file", cfgFile)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
