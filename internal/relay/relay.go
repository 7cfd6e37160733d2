package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sipwake/sipwake/internal/limit"
	"github.com/sipwake/sipwake/internal/push/pn"
	"github.com/sipwake/sipwake/internal/store"
)

// Store is what the relay needs from a record store. Records are sealed at
// rest by the store; the relay hands it plaintext in memory only.
type Store interface {
	ID(aor, device string) store.ID
	Put(ctx context.Context, r store.Record) error
	Get(ctx context.Context, id store.ID) (store.Record, error)
	ListAOR(ctx context.Context, aor string) ([]store.Record, error)
	Delete(ctx context.Context, id store.ID) (store.Record, error)
	// ScanDue lists the records whose DueAt has come (Wakeups walk them).
	ScanDue(ctx context.Context, until time.Time, fn func(store.Record) error) error
}

// Upstream un-registers a binding at the provider's registrar (Expired);
// the sip and handover packages implement it.
type Upstream interface {
	Unregister(ctx context.Context, b Binding) error
}

// Options are the relay's policy knobs.
type Options struct {
	// RecordTTL is how long a binding lives after its last refresh.
	RecordTTL time.Duration
	// RefreshStaleness bounds how stale a stored refresh time may be: a
	// refresh that changes nothing else is written only once the stored
	// one is this old (or a quarter of the granted expiry). 0 writes every
	// refresh.
	RefreshStaleness time.Duration
	// Providers are the push services sipwake can deliver to
	// (pn-provider values).
	Providers []string
	// FollowUpTimeout bounds a cancel push sent after a call ended.
	FollowUpTimeout time.Duration
	// Metrics counts what the relay does; nil keeps unexported ones.
	Metrics *Metrics
	// CallPushesPerMinute caps call pushes to one device, so an INVITE
	// flood for one AOR does not spam the phone; 0 disables the cap.
	CallPushesPerMinute int
	// Wakeups say when devices are woken without a call.
	Wakeups WakeupOptions
	// Bus and Node: set when several nodes share the store. This node
	// publishes its refreshes on Bus; Node is the address other nodes
	// reach it at (host:port), stored with every binding it refreshes so a
	// call parked elsewhere is sent here.
	Bus  Bus
	Node string
}

// Service owns the binding lifecycle.
type Service struct {
	store   Store
	pusher  Pusher
	opts    Options
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time

	// waiters are the calls parked on each binding, woken by Refreshed.
	waitMu  sync.Mutex
	waiters map[store.ID]map[*wakeup]struct{}
	// unsure are the bindings being written or whose last write failed
	// (see writing); pruneUnsure is the size at which old ones go.
	unsureMu    sync.Mutex
	unsure      map[store.ID]*unsureWrite
	pruneUnsure int
	// pushes tracks background follow-up pushes.
	pushes sync.WaitGroup
	traces *Traces
	// bus and node: set when several nodes share the store.
	bus  Bus
	node string
	// pushCaps holds each device's call-push budget.
	pushCaps *limit.Keyed[store.ID]
	// wakeups say when each stored binding is next due.
	wakeups *Wakeups
}

// New builds the relay. now is the clock (time.Now in production).
func New(st Store, p Pusher, opts Options, log *slog.Logger, now func() time.Time) *Service {
	if opts.FollowUpTimeout == 0 {
		opts.FollowUpTimeout = 10 * time.Second
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	s := &Service{store: st, pusher: p, opts: opts, metrics: opts.Metrics, log: log, now: now,
		waiters: map[store.ID]map[*wakeup]struct{}{}, unsure: map[store.ID]*unsureWrite{}, pruneUnsure: minPruneUnsure,
		traces: NewTraces(now), bus: opts.Bus, node: opts.Node,
		pushCaps: limit.New[store.ID](float64(opts.CallPushesPerMinute)/60, opts.CallPushesPerMinute, now)}
	s.wakeups = newWakeups(s, opts.Wakeups)
	return s
}

// Wakeups are the pushes sent without a call (refresh, expiry warnings);
// the app runs them.
func (s *Service) Wakeups() *Wakeups { return s.wakeups }

// Traces are the per-AOR troubleshooting traces (admin switches them).
func (s *Service) Traces() *Traces { return s.traces }

// Metrics are the relay's counters, for the SIP side to report calls.
func (s *Service) Metrics() *Metrics { return s.metrics }

// PushRequest is what a REGISTER's pn-* parameters ask for.
type PushRequest int

const (
	// PushNone: no pn-provider; the REGISTER passes through untouched.
	PushNone PushRequest = iota
	// PushQuery: pn-provider without a value asks which services sipwake
	// supports; nothing is stored.
	PushQuery
	// PushUnsupported: a provider sipwake does not serve (555).
	PushUnsupported
	// PushIncomplete: pn-provider without pn-prid (400).
	PushIncomplete
	// PushEnable: store the binding once the registrar accepts it.
	PushEnable
)

// ContactParams are the RFC 8599 parameters found on one Contact.
type ContactParams struct {
	HasProvider bool
	Device      Device
}

// Classify decides what a Contact's pn-* parameters ask for.
func (s *Service) Classify(p ContactParams) PushRequest {
	switch {
	case !p.HasProvider:
		return PushNone
	case p.Device.Provider == "":
		return PushQuery
	case !s.Supports(p.Device.Provider):
		return PushUnsupported
	case p.Device.Token == "":
		return PushIncomplete
	default:
		return PushEnable
	}
}

// Supports says whether sipwake delivers to the given pn-provider
// ("apns.dev", a development build's, wherever "apns" is served).
func (s *Service) Supports(provider string) bool {
	return slices.Contains(s.opts.Providers, pn.Family(strings.ToLower(provider)))
}

// Providers lists the push services sipwake delivers to.
func (s *Service) Providers() []string { return slices.Clone(s.opts.Providers) }

// BindingID names the binding of one device of one AOR; it is opaque and
// may be put in a SIP URI.
func (s *Service) BindingID(aor AOR, d Device) store.ID {
	return s.store.ID(string(aor), d.Key())
}

// Register stores (or refreshes) a binding the registrar has accepted; the
// record's TTL starts again. A new binding replaces the AOR's bindings of
// the same device with older tokens. aor is what Bindings returned for b's
// AOR when the REGISTER arrived (nil when it could not be read: b is then
// written and replaces nothing). It returns the binding as stored.
//
// A refresh that changes nothing but the time is not written while the
// stored refresh time is younger than the staleness bound (see
// refreshStale): the record's TTL is days, and a durable write per refresh
// is most of a REGISTER's cost. Every other change is written at once.
func (s *Service) Register(ctx context.Context, b Binding, aor []Binding) (Binding, error) {
	b = s.refreshed(b)
	i := storedAt(aor, b)
	if cur, ok := s.unwritten(b, aor, i); ok {
		return cur, nil
	}
	id := s.BindingID(b.AOR, b.Device)
	done := s.writing(id, b.UpdatedAt)
	err := s.put(ctx, s.recordID(b, id), b)
	done(err)
	if err != nil {
		return Binding{}, err
	}
	s.metrics.stored.Inc()
	s.log.Info("binding stored", "aor", b.AOR, "device", b.Device, "expires_at", b.ExpiresAt)
	if i < 0 {
		b.Replaced = s.replaceOlder(ctx, id, b, aor)
	}
	return b, nil
}

// RefreshUnwritten is Register for a refresh it would not write (see
// Register): the binding as stored, and true. False, having done nothing,
// when Register would write b: it touches no store, so a caller that must
// not wait for one (a SIP socket's reader) answers such a refresh
// itself and leaves the others to Register.
func (s *Service) RefreshUnwritten(b Binding, aor []Binding) (Binding, bool) {
	b = s.refreshed(b)
	return s.unwritten(b, aor, storedAt(aor, b))
}

// refreshed is b refreshed now: its refresh times, its TTL's end, and
// this node.
func (s *Service) refreshed(b Binding) Binding {
	now := s.now()
	b.UpdatedAt = now
	b.Node = s.node
	b.Upstream.RegisteredAt = now
	b.ExpiresAt = now.Add(s.opts.RecordTTL)
	return b
}

// storedAt is where aor (the AOR's bindings) holds b's device's binding;
// -1 when it holds none.
func storedAt(aor []Binding, b Binding) int {
	return slices.IndexFunc(aor, func(o Binding) bool { return o.AOR == b.AOR && o.Device == b.Device })
}

// unwritten returns aor[i], b's device's binding as stored (i < 0: none),
// when refreshed b leaves it as it is, counted as a refresh not written;
// false when b must be written.
func (s *Service) unwritten(b Binding, aor []Binding, i int) (Binding, bool) {
	if i < 0 || s.refreshStale(aor[i], b) || s.unconfirmed(s.BindingID(b.AOR, b.Device)) {
		return Binding{}, false
	}
	s.metrics.refreshesUnwritten.Inc()
	return aor[i], true
}

// refreshStale tells whether refresh b must be written over the stored cur:
// when it changes anything but the refresh time (UpdatedAt, the upstream
// RegisteredAt and the TTL's end that follow it) and the registration's
// Call-ID and CSeq (only a handed-over account's own REGISTERs read those,
// and accounts are always written; a device binding is un-registered under
// a Call-ID of sipwake's), or when cur's refresh time is older than
// Options.RefreshStaleness or a quarter of the expiry the registrar
// granted, whichever is less. So the stored refresh time is at most that
// stale: the record's end, and a wake-up to refresh (due before the
// upstream registration lapses), come at most that much early, never late.
func (s *Service) refreshStale(cur, b Binding) bool {
	bound := min(s.opts.RefreshStaleness, time.Duration(b.Upstream.Expires)*time.Second/4)
	return b.UpdatedAt.Sub(cur.UpdatedAt) >= bound || cur.Account != nil || b.Account != nil || !sameButTime(cur, b)
}

// sameButTime says whether b would be stored as cur is, the refresh's
// times, Call-ID and CSeq aside: every other field encode writes, compared
// (a refresh's encoding was a tenth of its CPU). TestSameButTimeSeesEveryField
// fails for a field added to Binding and not here.
func sameButTime(cur, b Binding) bool {
	cu, bu := cur.Upstream, b.Upstream
	return cur.AOR == b.AOR && cur.Device == b.Device && cur.Contact == b.Contact && cur.Instance == b.Instance &&
		cur.Flow == b.Flow && cu.Contact == bu.Contact && cu.Path == bu.Path && cu.Expires == bu.Expires &&
		cur.PNSReg == b.PNSReg && cur.RefreshPushedFor.Equal(b.RefreshPushedFor) && cur.Warned == b.Warned &&
		cur.Node == b.Node
}

// minPruneUnsure is the fewest unsure writes noted before old ones go.
const minPruneUnsure = 1024

// unsureWrite is a binding's write in flight, or failed.
type unsureWrite struct {
	inFlight int
	failed   bool
	at       time.Time // the UpdatedAt the last one carried
}

// writing notes that binding id, refreshed at, is being written; done says
// how the write ended. A store may hold a write before it is confirmed,
// and keep a failed one all the same (Redis keeps a write its replicas did
// not confirm within store.redis.replica_timeout): a refresh that found it
// must not skip writing it again. So no refresh of a binding is skipped
// while a write of it is in flight or after one failed, until one
// succeeds. A failed write older than RefreshStaleness says nothing more
// (such a refresh is written anyway): those notes go whenever the notes
// have doubled, so they stay about as many as the writes failing now.
func (s *Service) writing(id store.ID, at time.Time) (done func(error)) {
	s.unsureMu.Lock()
	defer s.unsureMu.Unlock()
	w := s.unsure[id]
	if w == nil {
		w = &unsureWrite{}
		s.unsure[id] = w
	}
	w.inFlight++
	w.at = at
	if len(s.unsure) >= s.pruneUnsure {
		for k, o := range s.unsure {
			if o.inFlight == 0 && at.Sub(o.at) >= s.opts.RefreshStaleness {
				delete(s.unsure, k)
			}
		}
		s.pruneUnsure = max(minPruneUnsure, 2*len(s.unsure))
	}
	return func(err error) {
		s.unsureMu.Lock()
		defer s.unsureMu.Unlock()
		w.inFlight--
		w.failed = err != nil
		if w.inFlight == 0 && !w.failed && s.unsure[id] == w {
			delete(s.unsure, id)
		}
	}
}

// unconfirmed tells whether a write of binding id is in flight or failed.
func (s *Service) unconfirmed(id store.ID) bool {
	s.unsureMu.Lock()
	defer s.unsureMu.Unlock()
	return s.unsure[id] != nil
}

// replaceOlder erases the AOR's other bindings of b's device (among all,
// read before b was stored), stored with tokens it no longer has, and
// returns their ids. A failure leaves the old binding to its TTL: the device still
// has its new one.
func (s *Service) replaceOlder(ctx context.Context, id store.ID, b Binding, all []Binding) []store.ID {
	var replaced []store.ID
	for _, old := range all {
		oldID := s.BindingID(old.AOR, old.Device)
		if old.Account != nil || oldID == id || !sameDevice(old, b) {
			continue
		}
		if err := s.Erase(ctx, old.AOR, old.Device, ErasedReplaced); err != nil {
			s.log.Warn("older binding of the device not erased", "aor", b.AOR, "error", err)
			continue
		}
		replaced = append(replaced, oldID)
	}
	return replaced
}

// put stores b under id, its RecordID (worked out once by the caller: a
// keyed hash), in the accounts index if it is a handed-over account, due
// when the wake-ups next have work for it.
func (s *Service) put(ctx context.Context, id store.ID, b Binding) error {
	data, err := encode(b)
	if err != nil {
		return fmt.Errorf("encode binding: %w", err)
	}
	rec := store.Record{ID: id, AOR: string(b.AOR), ExpiresAt: b.ExpiresAt, Data: data,
		DueAt: s.wakeups.dueAt(b), Account: b.Account != nil}
	if err := s.store.Put(ctx, rec); err != nil {
		return fmt.Errorf("store binding of %s: %w", b.AOR, err)
	}
	return nil
}

// Binding returns the binding stored under id.
func (s *Service) Binding(ctx context.Context, id store.ID) (Binding, error) {
	rec, err := s.store.Get(ctx, id)
	if err != nil {
		return Binding{}, err
	}
	return decode(rec)
}

// Bindings returns every device binding of an AOR.
func (s *Service) Bindings(ctx context.Context, aor AOR) ([]Binding, error) {
	recs, err := s.store.ListAOR(ctx, string(aor))
	if err != nil {
		return nil, err
	}
	out := make([]Binding, 0, len(recs))
	for _, r := range recs {
		b, err := decode(r)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Why a binding was erased (the label of sipwake_bindings_erased_total).
const (
	ErasedUnregistered = "unregistered"  // REGISTER with Expires: 0
	ErasedPushDisabled = "push_disabled" // refresh without pn-* parameters
	ErasedTokenDead    = "token_dead"    // the push service said so
	ErasedExpired      = "expired"       // TTL ran out
	ErasedByRequest    = "request"       // API DELETE or an operator's erasure
	ErasedReplaced     = "replaced"      // the device registered new tokens
)

// Erase removes one device's binding. An absent binding is not an error:
// erasure is idempotent.
func (s *Service) Erase(ctx context.Context, aor AOR, d Device, reason string) error {
	_, err := s.store.Delete(ctx, s.BindingID(aor, d))
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("erase binding of %s: %w", aor, err)
	}
	s.metrics.erasedFor(reason)
	s.log.Info("binding erased", "aor", aor, "device", d, "reason", reason)
	return nil
}

// ContactMatch names the contact of a REGISTER that carries no pn-*
// parameters, so the binding it refreshes can be found: by +sip.instance
// when the device sends one, else by its contact URI without pn-*.
type ContactMatch struct {
	Wildcard bool   // Contact: * (all of the AOR's contacts)
	URI      string // contact URI with pn-* parameters removed
	Instance string
}

// PushDisabled erases the AOR's bindings that a REGISTER without pn-*
// parameters (or a Contact: * removal) refreshed: the device turned push
// off. It returns how many it erased.
func (s *Service) PushDisabled(ctx context.Context, aor AOR, contacts []ContactMatch) (int, error) {
	bindings, err := s.Bindings(ctx, aor)
	if err != nil || len(bindings) == 0 {
		return 0, err
	}
	erased := 0
	for _, b := range bindings {
		if !slices.ContainsFunc(contacts, b.matches) {
			continue
		}
		if err := s.Erase(ctx, aor, b.Device, ErasedPushDisabled); err != nil {
			return erased, err
		}
		erased++
	}
	return erased, nil
}

func (b Binding) matches(c ContactMatch) bool {
	switch {
	case c.Wildcard:
		return true
	case c.Instance != "" && b.Instance != "":
		return c.Instance == b.Instance
	default:
		return c.URI == StripPushParams(b.Contact)
	}
}

// Expired handles records the sweeper has already erased: their upstream
// registrations are removed through up too, so a forgotten device stops
// being called.
func (s *Service) Expired(ctx context.Context, recs []store.Record, up Upstream) {
	for _, r := range recs {
		s.metrics.erasedFor(ErasedExpired)
		b, err := decode(r)
		if err != nil {
			s.log.Warn("expired record unreadable; erased without upstream un-register", "error", err)
			continue
		}
		s.log.Info("binding expired and erased", "aor", b.AOR, "device", b.Device)
		if err := up.Unregister(ctx, b); err != nil {
			s.log.Warn("upstream un-register of expired binding failed; the registrar drops it at its own expiry",
				"aor", b.AOR, "lapses_at", b.Upstream.LapsesAt(), "error", err)
		}
	}
}

// pushParams are the pn-* parameters of a URI string, by lower-case name.
func pushParams(uri string) map[string]string {
	_, params, _ := strings.Cut(uri, ";")
	params, _, _ = strings.Cut(params, "?") // headers follow
	out := map[string]string{}
	for _, p := range strings.Split(params, ";") {
		name, value, _ := strings.Cut(p, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		if strings.HasPrefix(name, "pn-") {
			out[name] = value
		}
	}
	return out
}

// StripPushParams removes the RFC 8599 pn-* parameters from a URI string
// (sip:alice@host;pn-prid=x;transport=tcp -> sip:alice@host;transport=tcp),
// the form a device is addressed by once it is awake.
func StripPushParams(uri string) string {
	head, params, found := strings.Cut(uri, ";")
	if !found {
		return uri
	}
	kept := []string{head}
	for _, p := range strings.Split(params, ";") {
		name, _, _ := strings.Cut(p, "=")
		if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(name)), "pn-") {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, ";")
}
