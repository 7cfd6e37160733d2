package relay

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/sipwake/sipwake/internal/push/pn"
	"github.com/sipwake/sipwake/internal/store"
)

// WakeupOptions say when devices are woken without a call.
type WakeupOptions struct {
	// Interval between passes over the records.
	Interval time.Duration
	// RefreshLead: a device is woken this long before its upstream
	// registration lapses, to refresh it.
	RefreshLead time.Duration
	// ExpiryWarnings: how long before the record's TTL runs out the user
	// is told to open the app once (visible push), largest first.
	ExpiryWarnings []time.Duration
}

// Wakeups wake sleeping devices when no call does: to refresh their
// upstream registration (+sip.pnsreg) and to warn the user before the
// record expires, so push never stops without a word. Every binding is
// stored with the time they next have work for it (Record.DueAt), so a
// pass reads only those (Store.ScanDue), not the whole store.
type Wakeups struct {
	svc  *Service
	opts WakeupOptions
}

func newWakeups(s *Service, opts WakeupOptions) *Wakeups {
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	opts.ExpiryWarnings = slices.Clone(opts.ExpiryWarnings)
	slices.SortFunc(opts.ExpiryWarnings, func(a, b time.Duration) int { return int(b - a) })
	return &Wakeups{svc: s, opts: opts}
}

// Run passes over the records every interval until ctx ends.
func (k *Wakeups) Run(ctx context.Context) {
	t := time.NewTicker(k.opts.Interval)
	defer t.Stop()
	for {
		if _, err := k.Pass(ctx); err != nil && ctx.Err() == nil {
			k.svc.log.Warn("wake-up pass failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass looks at the bindings whose due time has come, sends the wake-ups
// they need and stores each with its next due time; it returns how many
// pushes it sent.
func (k *Wakeups) Pass(ctx context.Context) (int, error) {
	now := k.svc.now()
	sent := 0
	err := k.svc.store.ScanDue(ctx, now, func(r store.Record) error {
		b, err := decode(r)
		if err != nil {
			k.svc.log.Warn("wake-ups: due record unreadable; the sweeper erases it at its expiry", "error", err)
			return nil
		}
		sent += k.wake(ctx, b, now)
		return nil
	})
	if err != nil {
		return sent, fmt.Errorf("wake-ups scan: %w", err)
	}
	return sent, nil
}

// dueAt is when the wake-ups next have work for b: its refresh push or its
// next expiry warning, whichever comes first; zero if neither will.
func (k *Wakeups) dueAt(b Binding) time.Time {
	due, _ := k.refreshAt(b)
	// Warnings are sorted largest first, so the next one is the earliest.
	if b.Warned >= 0 && b.Warned < len(k.opts.ExpiryWarnings) && b.Wakeable(pn.KindExpiryWarning) {
		if w := b.ExpiresAt.Add(-k.opts.ExpiryWarnings[b.Warned]); due.IsZero() || w.Before(due) {
			due = w
		}
	}
	return due
}

// refreshAt is when b's device is to be woken to refresh its upstream
// registration (RFC 8599 §4.1.4: a device that cannot refresh by itself
// does when pushed to, RefreshLead before the lapse; one whose Contact said
// +sip.pnsreg refreshes by itself that long before, as Feature-Caps told
// it): it has a token for such a push and has not been woken for this
// registration yet. ok is false when no such push is owed.
func (k *Wakeups) refreshAt(b Binding) (at time.Time, ok bool) {
	if b.PNSReg || b.Account != nil || b.Upstream.Expires == 0 || b.RefreshPushedFor.Equal(b.Upstream.RegisteredAt) ||
		!b.Wakeable(pn.KindRegister) {
		return time.Time{}, false
	}
	return b.Upstream.LapsesAt().Add(-k.opts.RefreshLead), true
}

// refreshDue: the refresh push for b is owed and its time has come.
func (k *Wakeups) refreshDue(b Binding, now time.Time) bool {
	at, ok := k.refreshAt(b)
	return ok && !now.Before(at)
}

// warningDue is the index of the expiry warning due now, or -1 (also
// for a device no visible push can reach).
func (k *Wakeups) warningDue(b Binding, now time.Time) int {
	due := -1
	if !b.Wakeable(pn.KindExpiryWarning) {
		return due
	}
	for i, w := range k.opts.ExpiryWarnings {
		if i >= b.Warned && !now.Before(b.ExpiresAt.Add(-w)) && now.Before(b.ExpiresAt) {
			due = i
		}
	}
	return due
}

// wake sends what is due for b and stores it again with its next due
// time. An expired binding is left to the sweeper.
func (k *Wakeups) wake(ctx context.Context, b Binding, now time.Time) int {
	s := k.svc
	if !now.Before(b.ExpiresAt) {
		return 0
	}
	sent := 0
	if k.refreshDue(b, now) {
		res := s.pusher.Send(ctx, b.target(), pn.Message{Kind: pn.KindRegister, Expiration: k.opts.RefreshLead})
		s.metrics.wakeups.WithLabelValues("refresh").Inc()
		s.log.Info("refresh push", "aor", b.AOR, "device", b.Device, "outcome", res.Outcome)
		if s.handled(ctx, b, res) {
			return 1
		}
		b.RefreshPushedFor = b.Upstream.RegisteredAt
		sent++
	}
	if i := k.warningDue(b, now); i >= 0 {
		res := s.pusher.Send(ctx, b.target(), pn.Message{Kind: pn.KindExpiryWarning, Expiration: time.Hour})
		s.metrics.wakeups.WithLabelValues("expiry_warning").Inc()
		s.log.Info("expiry warning push", "aor", b.AOR, "device", b.Device, "expires_at", b.ExpiresAt, "outcome", res.Outcome)
		if s.handled(ctx, b, res) {
			return sent + 1
		}
		b.Warned = i + 1
		sent++
	}
	if err := s.rewrite(ctx, b); err != nil {
		s.log.Warn("wake-ups could not record its push or next due time", "aor", b.AOR, "error", err)
	}
	return sent
}

// handled erases the record when the push service said the token is dead;
// true means the binding is gone.
func (s *Service) handled(ctx context.Context, b Binding, res pn.Result) bool {
	if !res.EraseRecord {
		return false
	}
	if err := s.Erase(ctx, b.AOR, b.Device, ErasedTokenDead); err != nil {
		s.log.Error("erase after dead token failed", "aor", b.AOR, "error", err)
	}
	return true
}

// rewrite stores a binding's bookkeeping without touching its TTL, unless
// the device re-registered meanwhile (its fresh record wins).
func (s *Service) rewrite(ctx context.Context, b Binding) error {
	id := s.RecordID(b)
	cur, err := s.Binding(ctx, id)
	if err != nil || !cur.UpdatedAt.Equal(b.UpdatedAt) {
		return err
	}
	return s.put(ctx, id, b)
}
