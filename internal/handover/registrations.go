// Package handover keeps the upstream registrations of SIP accounts that
// apps handed over to sipwake (SIPIS style): it registers each account at
// its registrar with digest auth under a contact that routes calls to
// sipwake (sip:sw-<binding id>@sipwake), refreshes it before it lapses,
// follows 423 and re-challenges, backs off when the registrar fails, and
// un-registers on DELETE and on record expiry. One scheduler goroutine and a
// bounded worker pool serve every account; restart resumes them from the
// store.
//
// It does not own the records (relay does, sealed by store), the HTTP API
// (package api), or calls for these accounts (package sip routes an INVITE
// for sw-<id> through relay to a push).
package handover

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

// Accounts is what the registrations need from the relay: the records of
// handed-over accounts. *relay.Service satisfies it.
type Accounts interface {
	AccountID(app, id string) store.ID
	Binding(ctx context.Context, id store.ID) (relay.Binding, error)
	RegisterAccount(ctx context.Context, b relay.Binding, ttl time.Duration) (relay.Binding, error)
	UpdateAccount(ctx context.Context, b relay.Binding) error
	EraseAccount(ctx context.Context, id store.ID, why string) (relay.Binding, error)
}

// Records lists the stored handed-over accounts (the relay stores them in
// the store's accounts index), to resume registrations on start and to
// find accounts other nodes took in. *store.Bolt and *store.Redis satisfy
// it.
type Records interface {
	ScanAccounts(ctx context.Context, fn func(store.Record) error) error
}

// Options configure Registrations.
type Options struct {
	// ContactFor is the contact URI sipwake registers for a binding, e.g.
	// "sip:sw-<id>@sipwake.example.com:5060;transport=udp": calls the
	// registrar sends to it reach sipwake's SIP side, which routes them by
	// id. transport is the account's transport to its registrar. Required.
	ContactFor func(id store.ID, transport string) string
	// UserAgent is sent in REGISTERs. Default "sipwake".
	UserAgent string
	// TLSConfig is used for accounts on transport tls (nil: system roots).
	TLSConfig *tls.Config
	// Timeout bounds one registration exchange, challenges included.
	// Default 10s.
	Timeout time.Duration
	// RefreshAt is the fraction of the granted expiry after which a
	// registration is refreshed; each refresh is drawn uniformly within
	// ±Jitter of it so registrations spread out. Defaults 0.8 and 0.05.
	RefreshAt, Jitter float64
	// RetryMin and RetryMax bound the exponential back-off after a failed
	// refresh. Defaults 5s and 5m.
	RetryMin, RetryMax time.Duration
	// ResumeSpread spreads, on start, the registrations that are already
	// due over this window, so a restart does not send every REGISTER in
	// the same second. Default 30s.
	ResumeSpread time.Duration
	// Workers bounds concurrent refreshes. Default 16.
	Workers int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Leases, when several nodes share the store, make one node at a time
	// keep an account registered; nil: this node keeps every account.
	Leases Leases
	// Rescan is how often, with Leases, the store is looked through for
	// accounts other nodes took in (so this node can take them over).
	// Default 30s.
	Rescan time.Duration
}

// Leases hand each account to one node at a time. Hold takes or extends
// this node's lease on id for ttl; when another node holds it, held is
// false and left says how long until that lease lapses.
type Leases interface {
	Hold(ctx context.Context, id store.ID, ttl time.Duration) (held bool, left time.Duration, err error)
	Release(ctx context.Context, id store.ID) error
}

func (o *Options) defaults() error {
	if o.Rescan <= 0 {
		o.Rescan = 30 * time.Second
	}
	if o.ContactFor == nil {
		return errors.New("handover: Options.ContactFor is required")
	}
	if o.UserAgent == "" {
		o.UserAgent = "sipwake"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.RefreshAt <= 0 || o.RefreshAt >= 1 {
		o.RefreshAt = 0.8
	}
	if o.Jitter <= 0 || o.Jitter >= o.RefreshAt {
		o.Jitter = 0.05
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 5 * time.Second
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Minute, o.RetryMin)
	}
	if o.ResumeSpread <= 0 {
		o.ResumeSpread = 30 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 16
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Phase is where an account's upstream registration stands.
type Phase string

const (
	// PhaseRegistering: a registration is due or under way and none has
	// succeeded since the registrations (re)started.
	PhaseRegistering Phase = "registering"
	// PhaseRegistered: the registrar accepted the last REGISTER.
	PhaseRegistered Phase = "registered"
	// PhaseStandby: another node holds the account's lease and keeps it
	// registered; this one takes over if that lease lapses.
	PhaseStandby Phase = "standby"
	// PhaseFailed: the last REGISTER failed; it is retried with back-off.
	PhaseFailed Phase = "failed"
)

// Status is an account's registration state as the API shows it. It holds
// no secret: LastError is built from status lines.
type Status struct {
	Phase        Phase
	RegisteredAt time.Time // last accepted REGISTER
	Expires      int       // seconds the registrar granted
	NextAttempt  time.Time // next scheduled REGISTER
	LastError    string
	Failures     int // consecutive failed refreshes
}

// stripes is the number of locks serialising work on one account (API
// calls, refreshes, expiry) without a lock per account.
const stripes = 256

// Registrations keep handed-over accounts registered upstream.
type Registrations struct {
	accounts Accounts
	records  Records
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	ua       *sipgo.UserAgent
	client   *sipgo.Client

	locks [stripes]sync.Mutex

	mu     sync.Mutex
	states map[store.ID]*state
	queue  schedule
	wake   chan struct{}

	runMu   sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	done    sync.WaitGroup
}

type state struct {
	Status
	gen  uint64 // matches the queue entry that is current
	cseq uint32 // highest CSeq sent, so failed attempts are not reused
}

// New builds the Registrations with its own SIP user agent (client only: nothing
// listens; responses come back on the socket the REGISTER left from).
func New(accounts Accounts, records Records, opts Options, log *slog.Logger) (*Registrations, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	// sipgo logs whole messages (credentials' AORs, numbers): redacted
	// as on the proxy side.
	sipLog := sipmsg.RedactedLogger(log.With("part", "handover-sip"))
	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent(opts.UserAgent),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(sipLog)),
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(sipLog)),
	}
	if opts.TLSConfig != nil {
		uaOpts = append(uaOpts, sipgo.WithUserAgenTLSConfig(opts.TLSConfig))
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		return nil, fmt.Errorf("handover: user agent: %w", err)
	}
	// rport: the registrar answers to the port the REGISTER came from,
	// which is what a client-only socket (or a NAT) needs.
	client, err := sipgo.NewClient(ua, sipgo.WithClientNAT(), sipgo.WithClientLogger(sipLog))
	if err != nil {
		_ = ua.Close()
		return nil, fmt.Errorf("handover: client: %w", err)
	}
	return &Registrations{
		accounts: accounts,
		records:  records,
		opts:     opts,
		log:      log.With("part", "handover"),
		now:      opts.Now,
		ua:       ua,
		client:   client,
		states:   map[store.ID]*state{},
		wake:     make(chan struct{}, 1),
	}, nil
}

// Start resumes every stored account and runs the scheduler until Stop.
// Registrations not yet due keep their schedule; those already due are
// spread over ResumeSpread. It is idempotent.
func (k *Registrations) Start(ctx context.Context) error {
	k.runMu.Lock()
	defer k.runMu.Unlock()
	if k.started {
		return nil
	}
	if k.stopped {
		return errors.New("handover: registrations stopped")
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	k.cancel = cancel
	k.started = true
	k.done.Add(1)
	go func() {
		defer k.done.Done()
		// Resuming reads every account: done here, not in Start, so many
		// accounts do not hold up readiness.
		k.resumeAll(ctx)
		if k.opts.Leases != nil && k.records != nil {
			// Counted like the scheduler, so Stop does not return (and the
			// store close) while a rescan still reads accounts.
			k.done.Go(func() { k.rescan(ctx) })
		}
		k.run(ctx)
	}()
	return nil
}

// rescan looks for accounts other nodes took in, so this node can take
// them over if their node dies.
func (k *Registrations) rescan(ctx context.Context) {
	t := time.NewTicker(k.opts.Rescan)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, _ = k.resumeUnknown(ctx)
	}
}

// resumeAll schedules every stored account again after a restart.
func (k *Registrations) resumeAll(ctx context.Context) {
	resumed := 0
	if k.records != nil {
		var err error
		resumed, err = k.resumeUnknown(ctx)
		if err != nil && ctx.Err() == nil {
			k.log.Error("handover: resuming accounts failed; they are re-registered when re-posted", "error", err)
		}
	}
	k.log.Info("handover registrations started", "resumed", resumed, "workers", k.opts.Workers)
}

// resumeUnknown schedules the stored accounts these registrations have no state for
// yet (after a restart: all; later: those other nodes took in) and says
// how many.
func (k *Registrations) resumeUnknown(ctx context.Context) (int, error) {
	n := 0
	err := k.records.ScanAccounts(ctx, func(r store.Record) error {
		k.mu.Lock()
		_, known := k.states[r.ID]
		k.mu.Unlock()
		if known {
			return nil
		}
		b, err := relay.DecodeBinding(r)
		if err != nil || b.Account == nil {
			return nil
		}
		k.resume(r.ID, b)
		n++
		return nil
	})
	return n, err
}

// heldIDs are the accounts this node keeps registered.
func (k *Registrations) heldIDs() []store.ID {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []store.ID
	for id, st := range k.states {
		if st.Phase != PhaseStandby {
			out = append(out, id)
		}
	}
	return out
}

// Phases counts the accounts in each registration phase (aggregate, for
// metrics).
func (k *Registrations) Phases() map[Phase]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[Phase]int{PhaseRegistering: 0, PhaseRegistered: 0, PhaseStandby: 0, PhaseFailed: 0}
	for _, st := range k.states {
		out[st.Phase]++
	}
	return out
}

// Stop ends the scheduler and waits for refreshes in flight (bounded by
// ctx). Registrations stay at their registrars: a restart resumes them.
func (k *Registrations) Stop(ctx context.Context) error {
	k.runMu.Lock()
	defer k.runMu.Unlock()
	if k.stopped {
		return nil
	}
	k.stopped = true
	if k.cancel != nil {
		k.cancel()
	}
	waited := make(chan struct{})
	go func() { k.done.Wait(); close(waited) }()
	var err error
	select {
	case <-waited:
	case <-ctx.Done():
		err = fmt.Errorf("handover: stop: %w", ctx.Err())
	}
	// Leases go back at once, so another node takes the accounts over now
	// rather than when the leases lapse.
	for _, id := range k.heldIDs() {
		k.release(ctx, id)
	}
	return errors.Join(err, k.ua.Close())
}

func (k *Registrations) lock(id store.ID) func() {
	m := &k.locks[id[0]]
	m.Lock()
	return m.Unlock
}

// Hand registers b's account upstream and, once the registrar has said 200,
// stores it for ttl and keeps it registered. created reports whether the
// account is new (false: an existing one was refreshed and its TTL
// restarted). On failure nothing is stored or changed and the error is an
// *Error naming the cause.
func (k *Registrations) Hand(ctx context.Context, b relay.Binding, ttl time.Duration) (saved relay.Binding, created bool, err error) {
	if b.Account == nil {
		return relay.Binding{}, false, errors.New("handover: binding has no account")
	}
	id := k.accounts.AccountID(b.Account.App, b.Account.ID)
	defer k.lock(id)()

	prev, err := k.accounts.Binding(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		created = true
	case err != nil:
		return relay.Binding{}, false, fmt.Errorf("handover: load account: %w", err)
	}
	_, transport, err := Target(b.Account.Registrar, b.Account.Transport)
	if err != nil {
		return relay.Binding{}, false, &Error{Cause: CauseAccount, Err: err}
	}
	b.Account.Transport = transport
	moved := !created && (prev.Account == nil || prev.AOR != b.AOR ||
		prev.Account.Registrar != b.Account.Registrar || prev.Account.Transport != transport)
	b.Upstream = relay.UpstreamState{Contact: k.opts.ContactFor(id, transport)}
	if !created && !moved {
		// Same registration, same dialog: keep Call-ID, advance CSeq.
		b.Upstream.CallID = prev.Upstream.CallID
		b.Upstream.CSeq = max(prev.Upstream.CSeq, k.sentCSeq(id))
	}

	// The app's request may go away mid-exchange; the registrar's state must
	// still end up known, so the exchange runs to its own timeout.
	regCtx := context.WithoutCancel(ctx)
	if err := k.register(regCtx, id, &b, b.Account.Expires); err != nil {
		k.log.Info("handover refused", "account", b.Account, "error", err)
		return relay.Binding{}, false, err
	}
	saved, err = k.accounts.RegisterAccount(regCtx, b, ttl)
	if err != nil {
		k.unregisterQuietly(regCtx, id, b, "store failed")
		return relay.Binding{}, false, fmt.Errorf("handover: store account: %w", err)
	}
	if moved {
		k.unregisterQuietly(regCtx, id, prev, "account moved")
	}
	k.extend(regCtx, id, saved)
	k.registered(id, saved)
	k.log.Info("account handed over", "account", saved.Account, "aor", saved.AOR, "created", created,
		"granted", saved.Upstream.Expires, "expires_at", saved.ExpiresAt)
	return saved, created, nil
}

// Release erases an app's account at once and un-registers it upstream
// (DELETE). An unknown account is store.ErrNotFound. A registrar that cannot
// be reached does not stop the erasure; its binding then lapses on its own.
func (k *Registrations) Release(ctx context.Context, app, accountID string) error {
	id := k.accounts.AccountID(app, accountID)
	defer k.lock(id)()
	b, err := k.accounts.EraseAccount(ctx, id, "deleted by app")
	if err != nil {
		return err
	}
	k.forget(id)
	k.unregisterQuietly(context.WithoutCancel(ctx), id, b, "deleted by app")
	k.release(context.WithoutCancel(ctx), id)
	return nil
}

func (k *Registrations) release(ctx context.Context, id store.ID) {
	if k.opts.Leases == nil {
		return
	}
	if err := k.opts.Leases.Release(ctx, id); err != nil {
		k.log.Warn("account lease not released; another node takes over when it lapses", "error", err)
	}
}

// Unregister removes a handed-over account's upstream registration after
// its record has expired (the sweeper has already erased it), and stops
// keeping it. It satisfies relay.Upstream for bindings with an Account.
func (k *Registrations) Unregister(ctx context.Context, b relay.Binding) error {
	if b.Account == nil {
		return errors.New("handover: not a handed-over account")
	}
	id := k.accounts.AccountID(b.Account.App, b.Account.ID)
	defer k.lock(id)()
	k.forget(id)
	b.Upstream.CSeq = max(b.Upstream.CSeq, k.sentCSeq(id))
	if err := k.register(ctx, id, &b, 0); err != nil {
		return fmt.Errorf("handover: un-register: %w", err)
	}
	k.log.Info("expired account un-registered", "account", b.Account, "aor", b.AOR)
	return nil
}

func (k *Registrations) unregisterQuietly(ctx context.Context, id store.ID, b relay.Binding, why string) {
	if b.Account == nil || b.Upstream.CallID == "" {
		return
	}
	if err := k.register(ctx, id, &b, 0); err != nil {
		k.log.Warn("upstream un-register failed; the registrar drops it at its own expiry",
			"account", b.Account, "why", why, "lapses_at", b.Upstream.LapsesAt(), "error", err)
		return
	}
	k.log.Info("account un-registered upstream", "account", b.Account, "why", why)
}

// Status is the registration state of the account stored under id.
func (k *Registrations) Status(id store.ID) (Status, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st, ok := k.states[id]
	if !ok {
		return Status{}, false
	}
	return st.Status, true
}

// refresh re-registers one account when its time has come.
func (k *Registrations) refresh(ctx context.Context, id store.ID) {
	defer k.lock(id)()
	b, err := k.accounts.Binding(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		k.forget(id)
		return
	}
	if err != nil {
		k.log.Warn("account not read; not refreshing it", "error", err)
		k.failed(id, err)
		return
	}
	if b.Account == nil {
		k.forget(id)
		return
	}
	if !k.now().Before(b.ExpiresAt) {
		// The record outlived its TTL and the sweeper has not taken it yet:
		// do its job rather than keep a dead account registered.
		if _, err := k.accounts.EraseAccount(ctx, id, "record expired"); err != nil && !errors.Is(err, store.ErrNotFound) {
			k.failed(id, err)
			return
		}
		k.forget(id)
		k.unregisterQuietly(ctx, id, b, "record expired")
		return
	}
	held, left, err := k.hold(ctx, id, k.opts.Timeout+leaseMargin, k.opts.Timeout)
	if err != nil {
		k.log.Warn("account lease not confirmed; not refreshing an account another node may take over",
			"account", b.Account, "error", err)
		k.failed(id, err)
		return
	}
	if !held {
		k.standby(id, left)
		return
	}
	b.Upstream.CSeq = max(b.Upstream.CSeq, k.sentCSeq(id))
	err = k.register(ctx, id, &b, b.Account.Expires)
	k.noteCSeq(id, b.Upstream.CSeq)
	if err != nil {
		k.log.Warn("registration refresh failed", "account", b.Account, "aor", b.AOR, "error", err)
		k.failed(id, err)
		return
	}
	if err := k.accounts.UpdateAccount(ctx, b); err != nil && !errors.Is(err, relay.ErrExpired) {
		k.log.Warn("refreshed registration not saved", "account", b.Account, "error", err)
	}
	k.extend(ctx, id, b)
	k.registered(id, b)
}

// leaseMargin is how long a lease taken for a refresh outlasts the
// REGISTER exchange it allows (Options.Timeout): the time the lease check
// itself may take.
const leaseMargin = 5 * time.Second

// hold takes or extends this node's lease on an account for ttl; without
// Leases every account is this node's. It fails closed: unless the lease
// is confirmed with need of it left, it returns an error and the caller
// must not act as the account's holder. The lease is counted from before
// the request went out, so this node's deadline comes no later than the
// one Redis counts from when it ran the command, however late the answer.
// Both run on the wall clock, not Options.Now: Redis expires the lease in
// real time.
func (k *Registrations) hold(ctx context.Context, id store.ID, ttl, need time.Duration) (bool, time.Duration, error) {
	if k.opts.Leases == nil {
		return true, 0, nil
	}
	deadline := time.Now().Add(ttl - need)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	held, left, err := k.opts.Leases.Hold(ctx, id, ttl)
	if err != nil {
		return false, 0, fmt.Errorf("lease not confirmed: %w", err)
	}
	if held && !time.Now().Before(deadline) {
		return false, 0, fmt.Errorf("lease confirmed with less than the %v this node needs of it", need)
	}
	return held, left, nil
}

// extend stretches this node's lease on an account it has just registered
// to outlast the next refresh. Failing that, the lease taken for the
// refresh lapses first and another node may take the account over; this
// one then finds it held at its next refresh and stands by.
func (k *Registrations) extend(ctx context.Context, id store.ID, b relay.Binding) {
	if _, _, err := k.hold(ctx, id, k.leaseFor(b), 0); err != nil {
		k.log.Warn("account lease not extended; another node may take the account over", "account", b.Account, "error", err)
	}
}

// leaseFor outlasts the next refresh (at RefreshAt±Jitter of the granted
// expiry) but not the registration: if this node dies, another takes the
// account over before the registrar drops it.
func (k *Registrations) leaseFor(b relay.Binding) time.Duration {
	granted := time.Duration(b.Upstream.Expires) * time.Second
	return max(time.Duration(float64(granted)*min(k.opts.RefreshAt+k.opts.Jitter+0.1, 0.98)), 2*time.Second)
}

// standby waits for another node's lease to lapse.
func (k *Registrations) standby(id store.ID, left time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.stateLocked(id)
	st.Phase = PhaseStandby
	k.scheduleLocked(id, st, k.now().Add(max(left, 100*time.Millisecond)))
}

func (k *Registrations) sentCSeq(id store.ID) uint32 {
	k.mu.Lock()
	defer k.mu.Unlock()
	if st, ok := k.states[id]; ok {
		return st.cseq
	}
	return 0
}

func (k *Registrations) noteCSeq(id store.ID, cseq uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if st, ok := k.states[id]; ok && cseq > st.cseq {
		st.cseq = cseq
	}
}

// registered records a successful registration and schedules its refresh.
func (k *Registrations) registered(id store.ID, b relay.Binding) {
	granted := time.Duration(b.Upstream.Expires) * time.Second
	next := b.Upstream.RegisteredAt.Add(k.refreshDelay(granted))
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.stateLocked(id)
	st.Phase = PhaseRegistered
	st.RegisteredAt = b.Upstream.RegisteredAt
	st.Expires = b.Upstream.Expires
	st.LastError = ""
	st.Failures = 0
	st.cseq = max(st.cseq, b.Upstream.CSeq)
	k.scheduleLocked(id, st, next)
}

// failed records a failed attempt and schedules a retry with back-off.
func (k *Registrations) failed(id store.ID, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.stateLocked(id)
	st.Phase = PhaseFailed
	st.LastError = err.Error()
	st.Failures++
	k.scheduleLocked(id, st, k.now().Add(k.backoff(st.Failures)))
}

// resume schedules a stored account found on start.
func (k *Registrations) resume(id store.ID, b relay.Binding) {
	now := k.now()
	granted := time.Duration(b.Upstream.Expires) * time.Second
	next := b.Upstream.RegisteredAt.Add(k.refreshDelay(granted))
	if !next.After(now) {
		next = now.Add(rand.N(k.opts.ResumeSpread))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.stateLocked(id)
	st.Phase = PhaseRegistering
	switch {
	case k.opts.Leases != nil:
		// Whose it is shows at its refresh, when the lease is asked for.
		st.Phase = PhaseStandby
	case b.Upstream.LapsesAt().After(now):
		st.Phase = PhaseRegistered
	}
	st.RegisteredAt = b.Upstream.RegisteredAt
	st.Expires = b.Upstream.Expires
	st.cseq = max(st.cseq, b.Upstream.CSeq)
	k.scheduleLocked(id, st, next)
}

func (k *Registrations) forget(id store.ID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.states, id) // its queue entry is skipped when it comes up
}

func (k *Registrations) stateLocked(id store.ID) *state {
	st, ok := k.states[id]
	if !ok {
		st = &state{Status: Status{Phase: PhaseRegistering}}
		k.states[id] = st
	}
	return st
}

func (k *Registrations) scheduleLocked(id store.ID, st *state, at time.Time) {
	st.gen++
	st.NextAttempt = at
	k.queue.push(entry{id: id, due: at, gen: st.gen})
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// refreshDelay is when, after a registration, to refresh it: RefreshAt of
// the granted expiry, jittered, and at least a second.
func (k *Registrations) refreshDelay(granted time.Duration) time.Duration {
	if granted <= 0 {
		return k.opts.RetryMin
	}
	f := k.opts.RefreshAt - k.opts.Jitter + 2*k.opts.Jitter*rand.Float64()
	return max(time.Duration(float64(granted)*f), time.Second)
}

// backoff is the wait before retry n (1, 2, …): doubling from RetryMin up
// to RetryMax, with ±20% jitter.
func (k *Registrations) backoff(n int) time.Duration {
	d := k.opts.RetryMin
	for i := 1; i < n && d < k.opts.RetryMax; i++ {
		d *= 2
	}
	d = min(d, k.opts.RetryMax)
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// run is the scheduler: it hands due accounts to at most Workers
// concurrent refreshes.
func (k *Registrations) run(ctx context.Context) {
	sem := make(chan struct{}, k.opts.Workers)
	var workers sync.WaitGroup
	defer workers.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, wait := k.due()
		for _, id := range due {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			workers.Add(1)
			go func() {
				defer workers.Done()
				defer func() { <-sem }()
				k.refresh(ctx, id)
			}()
		}
		if len(due) > 0 {
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-k.wake:
		case <-timer.C:
		}
	}
}

// due pops the accounts whose time has come (at most Workers at a time, so
// a backlog is worked through without queuing goroutines) and says how long
// to sleep when there are none.
func (k *Registrations) due() ([]store.ID, time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	var ids []store.ID
	for k.queue.Len() > 0 && len(ids) < k.opts.Workers {
		e := k.queue.peek()
		st, ok := k.states[e.id]
		if !ok || st.gen != e.gen {
			k.queue.pop() // superseded or forgotten
			continue
		}
		if e.due.After(now) {
			return ids, e.due.Sub(now)
		}
		k.queue.pop()
		ids = append(ids, e.id)
	}
	return ids, time.Hour
}
