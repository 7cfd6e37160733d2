package push

import (
	"cmp"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/internal/push/apns"
	"github.com/sipwake/sipwake/internal/push/pn"
)

const (
	defaultMaxInFlight = 512
	// defaultTimeout bounds a Send whose context has no deadline.
	defaultTimeout = 30 * time.Second
	// maxDeadlineMargin: Send stops this much (or a tenth of the time left,
	// if less) before the caller's deadline so the caller still has time to
	// act on the result.
	maxDeadlineMargin = 100 * time.Millisecond
)

// provider is one app's connection to APNs or FCM. Implementations classify
// their errors (pn.ClassifiedError), never retry, and make their push request
// with the context Send is given (attempts are counted through its trace).
type provider interface {
	// Send pushes m to tok, one of t's tokens (t gives the app's strings).
	Send(ctx context.Context, pushID string, tok pn.Token, t pn.Target, m pn.Message) error
	Close()
}

// Dispatcher is the Sender for every configured app. It is safe for
// concurrent use; build it with New and Close it when done.
type Dispatcher struct {
	log     *slog.Logger
	apps    []*app
	sem     chan struct{}
	now     func() time.Time
	backoff backoff
	seed    maphash.Seed

	sent *prometheus.CounterVec
	dur  *prometheus.HistogramVec

	// newFCM builds an FCM app's client (WithFCM); nil refuses FCM apps.
	newFCM func(context.Context, pn.FCMOptions) (provider, error)

	onceMu    sync.Mutex
	onceSeen  map[string]struct{}
	closeOnce sync.Once
}

type app struct {
	name     string
	provider string
	// pn-param matching
	bundle            string
	project, senderID string

	// production serves pn-provider apns and fcm; sandbox apns.dev.
	production, sandbox *endpoint
	// configLogged holds the reasons of config errors already logged loudly.
	configLogged sync.Map
}

// endpoint is one connection of an app to its push service. Tokens are
// issued per APNs environment, so each keeps its own token-health window.
type endpoint struct {
	p      provider
	health tokenHealth
}

// endpointFor is where a push for pn-provider goes.
func (a *app) endpointFor(provider string) *endpoint {
	if pn.Sandbox(provider) {
		return a.sandbox
	}
	return a.production
}

type backoff struct{ base, max time.Duration }

// Option tunes a Dispatcher beyond its Config (mostly for tests).
type Option func(*Dispatcher)

// WithClock sets the clock used for APNs expirations and the token-health
// window.
func WithClock(now func() time.Time) Option { return func(d *Dispatcher) { d.now = now } }

// WithBackoff sets the first retry delay and its cap (defaults 50ms, 1s);
// each delay is jittered between half and all of its value.
func WithBackoff(base, limit time.Duration) Option {
	return func(d *Dispatcher) { d.backoff = backoff{base, limit} }
}

// WithFCM sets how an FCM app gets its client: internal/app passes
// fcm.New. push does not import internal/push/fcm itself so that what links
// push (config, relay's tests, the fakes) does not link the Firebase SDK,
// the heaviest of sipwake's dependencies; without WithFCM, New refuses a
// Config with an FCM app.
func WithFCM[P provider](dial func(context.Context, pn.FCMOptions) (P, error)) Option {
	return func(d *Dispatcher) {
		d.newFCM = func(ctx context.Context, o pn.FCMOptions) (provider, error) {
			p, err := dial(ctx, o)
			if err != nil {
				return nil, err
			}
			return p, nil
		}
	}
}

// New validates cfg and builds one long-lived client per app. reg may be nil.
func New(cfg Config, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Dispatcher, error) {
	if err := cfg.Validate().Err(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{
		log:      log,
		now:      time.Now,
		backoff:  backoff{50 * time.Millisecond, time.Second},
		seed:     maphash.MakeSeed(),
		onceSeen: map[string]struct{}{},
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipwake_push_sent_total",
			Help: "Pushes sent, by provider and outcome.",
		}, []string{"provider", "outcome"}),
		dur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "sipwake_push_dispatch_seconds",
			Help:    "Time from Send to its result, retries included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"provider"}),
	}
	for _, o := range opts {
		o(d)
	}
	n := cfg.MaxInFlight
	if n == 0 {
		n = defaultMaxInFlight
	}
	d.sem = make(chan struct{}, n)
	for i, ac := range cfg.Apps {
		a, err := d.buildApp(ac)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("push.apps[%d] (%s): %w", i, ac.Name, err)
		}
		d.apps = append(d.apps, a)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{d.sent, d.dur} {
			if err := reg.Register(c); err != nil {
				d.Close()
				return nil, fmt.Errorf("push metrics: %w", err)
			}
		}
	}
	return d, nil
}

func (d *Dispatcher) buildApp(ac AppConfig) (*app, error) {
	a := &app{name: ac.Name, provider: ac.Provider}
	switch ac.Provider {
	case ProviderAPNs:
		c := ac.APNs
		a.bundle = c.BundleID
		o := apns.Options{BundleID: c.BundleID, TeamID: c.TeamID, KeyID: c.KeyID, Now: d.now}
		var err error
		if c.KeyFile != "" {
			if o.AuthKey, err = loadAuthKey(c.KeyFile); err != nil {
				return nil, err
			}
		} else {
			cert, err := loadCertificate(c.CertFile, c.PasswordFile)
			if err != nil {
				return nil, err
			}
			o.Certificate = &cert
		}
		if c.CAFile != "" {
			if o.RootCAs, err = loadCAs(c.CAFile); err != nil {
				return nil, err
			}
		}
		// One key or certificate serves both environments; the device's
		// pn-provider says which issued its tokens.
		for _, env := range []struct {
			endpoint string
			sandbox  bool
			dst      **endpoint
		}{{c.Endpoint, false, &a.production}, {c.SandboxEndpoint, true, &a.sandbox}} {
			if o.Host, err = apnsHost(env.endpoint, env.sandbox); err != nil {
				a.close()
				return nil, err
			}
			p, err := apns.New(o)
			if err != nil {
				a.close()
				return nil, err
			}
			*env.dst = &endpoint{p: p}
		}
	case ProviderFCM:
		c := ac.FCM
		a.project, a.senderID = c.ProjectID, c.SenderID
		js, err := loadServiceAccount(c.CredentialsFile)
		if err != nil {
			return nil, err
		}
		if d.newFCM == nil {
			return nil, errors.New("no FCM client: push.New was not given WithFCM")
		}
		o := pn.FCMOptions{ProjectID: c.ProjectID, CredentialsJSON: js, Endpoint: fcmEndpoint(c.Endpoint), Now: d.now}
		if c.CAFile != "" {
			if o.RootCAs, err = loadCAs(c.CAFile); err != nil {
				return nil, err
			}
		}
		p, err := d.newFCM(context.Background(), o)
		if err != nil {
			return nil, err
		}
		a.production = &endpoint{p: p}
	}
	return a, nil
}

// close releases the app's connections.
func (a *app) close() {
	for _, e := range []*endpoint{a.production, a.sandbox} {
		if e != nil {
			e.p.Close()
		}
	}
}

// fcmEndpoint accepts the endpoint with or without the /v1 API version.
func fcmEndpoint(s string) string {
	if s == "" {
		return ""
	}
	s = strings.TrimSuffix(s, "/")
	if i := strings.Index(s, "://"); i >= 0 && !strings.Contains(s[i+3:], "/") {
		s += "/v1"
	}
	return s
}

// Close releases the apps' connections. It is idempotent.
func (d *Dispatcher) Close() {
	d.closeOnce.Do(func() {
		for _, a := range d.apps {
			a.close()
		}
	})
}

// pick finds the app for a target: same push service, and pn-param naming
// its bundle id (APNs "<team>.<bundle>[.<services>]", whatever the team:
// Linphone builds send a placeholder) or its sender or project id (FCM).
// With a single app for the service, an empty pn-param selects it, and so
// does an unknown FCM one (Linphone sends the sender id, which a
// service-account file does not hold): the log then says once which
// sender_id to set.
func (d *Dispatcher) pick(t Target) *app {
	family := pn.Family(t.Provider)
	var only *app
	count := 0
	for _, a := range d.apps {
		if a.provider != family {
			continue
		}
		count++
		only = a
		if a.matches(t.Param) {
			return a
		}
	}
	switch {
	case count != 1:
		return nil
	case t.Param == "":
		return only
	case family == ProviderFCM:
		d.once("sender/"+t.Param, func() {
			d.log.Warn("push: pn-param names no configured FCM app; sending with the only one. Set its sender_id to this value",
				"app", only.name, "pn_param", t.Param)
		})
		return only
	}
	return nil
}

func (a *app) matches(param string) bool {
	switch a.provider {
	case ProviderAPNs:
		_, ok := pn.ParseAPNsParam(param).Team(a.bundle)
		return ok
	case ProviderFCM:
		return param == a.project || (a.senderID != "" && param == a.senderID)
	}
	return false
}

func (d *Dispatcher) app(name string) *app {
	for _, a := range d.apps {
		if a.name == name {
			return a
		}
	}
	return nil
}

// Send delivers m to t, retrying inside ctx's deadline. It never blocks past
// that deadline, even when all push slots are busy.
func (d *Dispatcher) Send(ctx context.Context, t Target, m Message) Result {
	a := d.pick(t)
	if a == nil {
		d.unknownApp(ctx, t)
		label := "unknown"
		if f := pn.Family(t.Provider); f == ProviderAPNs || f == ProviderFCM {
			label = f
		}
		d.sent.WithLabelValues(label, ConfigError.String()).Inc()
		return Result{Outcome: ConfigError, Reason: "UnknownApp"}
	}
	return d.sendTo(ctx, a, t, m)
}

func (d *Dispatcher) unknownApp(ctx context.Context, t Target) {
	first := false
	d.once(t.Provider+"/"+t.Param, func() { first = true })
	lvl := slog.LevelDebug
	if first {
		lvl = slog.LevelError
	}
	d.log.Log(ctx, lvl, "push: no app configured for this pn-provider/pn-param; check push.apps",
		"provider", t.Provider, "pn_param", t.Param, "token", MaskToken(t.Token))
}

// once runs fn the first time key is seen (of the first 256 keys: a flood
// of made-up pn-params must not grow the set).
func (d *Dispatcher) once(key string, fn func()) {
	d.onceMu.Lock()
	_, seen := d.onceSeen[key]
	if !seen && len(d.onceSeen) < 256 {
		d.onceSeen[key] = struct{}{}
	}
	d.onceMu.Unlock()
	if !seen {
		fn()
	}
}

func (d *Dispatcher) sendTo(ctx context.Context, a *app, t Target, m Message) Result {
	tok, ok := pn.Route(a.provider, m.Kind, t.Tokens())
	if !ok {
		// Nothing the service would take: no push, no error, no erasure.
		d.sent.WithLabelValues(a.provider, NotSent.String()).Inc()
		d.log.Debug("push not sent: the device has no token for this kind of push",
			"app", a.name, "kind", m.Kind.String(), "token", MaskToken(t.Token))
		return Result{Outcome: NotSent, Reason: "NoTokenForKind"}
	}
	e := a.endpointFor(t.Provider)
	start := time.Now()
	ctx, cancel := d.withDeadline(ctx)
	defer cancel()

	var res Result
	select {
	case d.sem <- struct{}{}:
		res = d.attempt(ctx, a, e, tok, t, m)
		<-d.sem
	case <-ctx.Done():
		res = Result{Outcome: Failed, Reason: "QueueFull"}
	}
	res.EraseRecord = d.judge(a, e, tok.Value, res)
	res.Service = tok.Service

	elapsed := time.Since(start)
	d.sent.WithLabelValues(a.provider, res.Outcome.String()).Inc()
	d.dur.WithLabelValues(a.provider).Observe(elapsed.Seconds())

	attrs := []any{"app", a.name, "provider", t.Provider, "kind", m.Kind.String(),
		"token", MaskToken(tok.Value), "service", tok.Service, "outcome", res.Outcome.String(), "reason", res.Reason,
		"attempts", res.Attempts, "erase", res.EraseRecord, "elapsed", elapsed}
	switch res.Outcome {
	case Delivered:
		d.log.Debug("push delivered", attrs...)
	case ConfigError:
		// Logged loudly once in attempt.
	default:
		d.log.Warn("push not delivered", attrs...)
	}
	return res
}

func (d *Dispatcher) withDeadline(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithTimeout(ctx, defaultTimeout)
	}
	margin := min(time.Until(dl)/10, maxDeadlineMargin)
	if margin < 0 {
		margin = 0
	}
	return context.WithDeadline(ctx, dl.Add(-margin))
}

// attempt is the one retry loop. A retry follows only an answer that proves
// the push was not delivered (429, 5xx) or a transport error; every attempt
// carries the same push id so the app can drop a duplicate should a lost
// answer ever hide a delivery. Only tries whose request reached the wire are
// counted as attempts: one the deadline cut before it left never reached the
// service.
func (d *Dispatcher) attempt(ctx context.Context, a *app, e *endpoint, tok pn.Token, t Target, m Message) Result {
	id := newPushID()
	delay := d.backoff.base
	answered := "" // the service's last answer: says more than a deadline
	sent := 0
	for try := 1; ; try++ {
		wctx, wire := onWire(ctx)
		err := e.p.Send(wctx, id, tok, t, m)
		if wire.Load() {
			sent++
		}
		if err == nil {
			return Result{Outcome: Delivered, Attempts: sent}
		}
		verdict, reason, after := pn.VerdictRetry, "Error", time.Duration(0)
		var ce pn.ClassifiedError
		if errors.As(err, &ce) {
			verdict, reason, after = ce.Verdict(), ce.Reason(), ce.RetryAfter()
			if !errors.Is(err, context.DeadlineExceeded) {
				answered = reason
			}
		}
		switch verdict {
		case pn.VerdictTokenDead:
			return Result{Outcome: TokenDead, Reason: reason, Attempts: sent}
		case pn.VerdictTokenRejected:
			return Result{Outcome: TokenRejected, Reason: reason, Attempts: sent}
		case pn.VerdictWrongTopic:
			d.log.Error("push: the service says this token is not for the push's topic; the binding is kept",
				"app", a.name, "kind", m.Kind.String(), "service", tok.Service, "token", MaskToken(tok.Value), "reason", reason)
			return Result{Outcome: WrongTopic, Reason: reason, Attempts: sent}
		case pn.VerdictConfig:
			d.configError(a, reason, err)
			return Result{Outcome: ConfigError, Reason: reason, Attempts: sent}
		}
		if ctx.Err() != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
				// An attempt cut by the deadline after the service kept
				// refusing (503s) failed for the service's reason.
				reason = cmp.Or(answered, "Timeout")
			}
			return Result{Outcome: Failed, Reason: reason, Attempts: sent}
		}
		wait := delay/2 + rand.N(delay/2+1)
		wait = max(wait, after)
		delay = min(delay*2, d.backoff.max)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= wait {
			return Result{Outcome: Failed, Reason: reason, Attempts: sent}
		}
		d.log.Debug("push retry", "app", a.name, "token", MaskToken(tok.Value), "try", try,
			"reason", reason, "wait", wait, "err", err.Error())
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return Result{Outcome: Failed, Reason: reason, Attempts: sent}
		}
	}
}

// onWire returns ctx traced so that the flag turns true once a request made
// with it has written its headers to the connection: from then on the service
// may have seen it. Both providers make their push request with the context
// Send is given (FCM fetches its OAuth tokens with a context of its own).
func onWire(ctx context.Context) (context.Context, *atomic.Bool) {
	wrote := new(atomic.Bool)
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }}), wrote
}

func (d *Dispatcher) configError(a *app, reason string, err error) {
	if _, seen := a.configLogged.LoadOrStore(reason, struct{}{}); seen {
		d.log.Debug("push config error (already reported)", "app", a.name, "reason", reason)
		return
	}
	d.log.Error("push: configuration error; pushes for this app will fail until the config is fixed",
		"app", a.name, "provider", a.provider, "reason", reason, "err", err.Error())
}

func newPushID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

var _ Sender = (*Dispatcher)(nil)
