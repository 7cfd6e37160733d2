// Command pushfake runs the fake APNs and FCM services from
// internal/push/pushtest on loopback addresses for load and end-to-end
// scripts. It writes the credential files and a ready `push:` config section
// into -dir, prints every push it receives as one JSON line on stdout, and
// exits on SIGTERM or SIGINT.
//
//	pushfake -apns 127.0.0.1:8443 -fcm 127.0.0.1:8444 -dir /tmp/pushfake
//
// Like the services, the fakes deliver only to tokens they issued (any
// other is answered 400 BadDeviceToken, or INVALID_ARGUMENT by FCM), and
// an APNs token only under the topic it was issued for. A script cannot
// ask for tokens, so they are issued at start:
//
//   - -voip-tokens N: PushKit tokens for topic "<bundle>.voip" (VoIP
//     pushes), pushtest.APNsToken(0..N-1): hex(sha256("sipwake-device-<i>")).
//   - -remote-tokens N: remote-notification tokens for topic "<bundle>"
//     (alert and background pushes): hex(sha256("sipwake-remote-<i>")).
//   - -fcm-tokens N: FCM tokens for the -sender id, pushtest.FCMToken(0..N-1).
//
// Lower-case hex; <i> in decimal.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pushfake:", err)
		stop()
		os.Exit(1)
	}
}

// run serves the fakes until ctx ends.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pushfake", flag.ContinueOnError)
	fs.SetOutput(stderr)
	apnsAddr := fs.String("apns", "127.0.0.1:8443", "fake APNs listen address (empty: off)")
	fcmAddr := fs.String("fcm", "127.0.0.1:8444", "fake FCM listen address (empty: off)")
	dir := fs.String("dir", "pushfake", "directory for keys, CA certificates, service account and push-config.yaml")
	bundle := fs.String("bundle", "org.sipwake.test", "APNs bundle id the fake accepts")
	project := fs.String("project", "sipwake-test", "Firebase project id the fake serves")
	sender := fs.String("sender", "123456789012", "Firebase sender id (project number) the fake's FCM tokens are bound to")
	voipTokens := fs.Int("voip-tokens", 10000, "PushKit tokens issued: pushtest.APNsToken(0..N-1), topic <bundle>.voip")
	remoteTokens := fs.Int("remote-tokens", 10000, "remote-notification tokens issued: hex(sha256(\"sipwake-remote-<i>\")), i in 0..N-1, topic <bundle>")
	fcmTokens := fs.Int("fcm-tokens", 10000, "FCM tokens issued to -sender: pushtest.FCMToken(0..N-1)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	log := slog.New(slog.NewTextHandler(stderr, nil))
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}

	var mu sync.Mutex
	enc := json.NewEncoder(stdout)
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
		for i := range *voipTokens {
			f.VoIPToken(i)
		}
		for i := range *remoteTokens {
			f.RemoteToken(i)
		}
		cfg.Apps = append(cfg.Apps, f.App("ios"))
		log.Info("fake APNs listening", "url", f.URL, "pn_param", f.Param(), "key_file", f.KeyFile, "ca_file", f.CAFile,
			"voip_tokens", *voipTokens, "remote_tokens", *remoteTokens)
	}
	if *fcmAddr != "" {
		f, err := pushtest.StartFCM(pushtest.FCMOptions{Addr: *fcmAddr, Dir: *dir, ProjectID: *project, SenderID: *sender, OnPush: print})
		if err != nil {
			return err
		}
		defer f.Close()
		for i := range *fcmTokens {
			f.Token(i)
		}
		cfg.Apps = append(cfg.Apps, f.App("android"))
		log.Info("fake FCM listening", "url", f.URL, "pn_param", f.ProjectID, "sender_id", f.SenderID, "credentials_file", f.CredentialsFile,
			"ca_file", f.CAFile, "fcm_tokens", *fcmTokens)
	}
	b, err := yaml.Marshal(map[string]push.Config{"push": cfg})
	if err != nil {
		return err
	}
	// Written whole, then renamed: a script waiting for the file never
	// reads half of it.
	cfgFile := filepath.Join(*dir, "push-config.yaml")
	if err := os.WriteFile(cfgFile+".tmp", b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(cfgFile+".tmp", cfgFile); err != nil {
		return err
	}
	log.Info("push config written", "file", cfgFile)
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}
