package push

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/sipwake/sipwake/internal/push/pn"
)

// RunTestPush sends one push of the given kind to token through the app
// named app (or, if app is empty, the only app of provider) and prints one
// outcome line to out. It backs `sipwake push test`, so an operator can check
// credentials before going live. It returns an error unless the push was
// delivered. opts are New's (WithFCM for an FCM app).
func RunTestPush(ctx context.Context, cfg Config, provider, token, app string, kind Kind, out io.Writer, log *slog.Logger, opts ...Option) error {
	var chosen *AppConfig
	for i := range cfg.Apps {
		a := &cfg.Apps[i]
		if (app == "" || a.Name == app) && (provider == "" || a.Provider == provider) {
			if chosen != nil {
				return fmt.Errorf("push test: several %s apps configured; name one with --app", provider)
			}
			chosen = a
		}
	}
	if chosen == nil {
		return fmt.Errorf("push test: no app %q for provider %q in push.apps", app, provider)
	}
	if token == "" {
		return fmt.Errorf("push test: token is empty")
	}
	// Build only the chosen app, so another app's broken files do not stop
	// the test.
	d, err := New(Config{MaxInFlight: 1, Apps: []AppConfig{*chosen}}, log, nil, opts...)
	if err != nil {
		return fmt.Errorf("push test: %w", err)
	}
	defer d.Close()

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultTimeout)
		defer cancel()
	}
	m := Message{Kind: kind, CallID: "sipwake-push-test-" + newPushID(), Expiration: 30 * time.Second}
	switch kind {
	case KindCall:
		m.CallerName, m.CallerNumber = "sipwake push test", "0"
	case KindCancel:
		m.CallerName, m.Reason = "sipwake push test", ReasonMissed
	case KindMessage:
		m.CallerName, m.CallerNumber = "sipwake push test", "0"
	}
	t := Target{Provider: chosen.Provider, Token: token}
	if chosen.Provider == ProviderAPNs && !strings.Contains(token, ":") {
		// A bare APNs token: the one this kind of push goes to.
		service := pn.ServiceRemote
		if kind == KindCall {
			service = pn.ServiceVoIP
		}
		t.Token += ":" + service
	}
	res := d.sendTo(ctx, d.app(chosen.Name), t, m)
	_, err = fmt.Fprintf(out, "push test: app=%s provider=%s kind=%s token=%s outcome=%s reason=%q attempts=%d\n",
		chosen.Name, chosen.Provider, kind, MaskToken(token), res.Outcome, res.Reason, res.Attempts)
	if err != nil {
		return err
	}
	if res.Outcome != Delivered {
		return fmt.Errorf("push test: %s (%s)", res.Outcome, res.Reason)
	}
	return nil
}
