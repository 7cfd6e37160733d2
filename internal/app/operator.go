package app

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sipwake/sipwake/internal/admin"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// unregisterTimeout bounds the upstream un-REGISTER of an erased binding.
const unregisterTimeout = 5 * time.Second

// operator is the admin listener's view of the App.
type operator struct{ a *App }

var _ admin.Backend = operator{}

// Ready lists why the instance should not get traffic: not started or
// shutting down, store unreadable, a configured SIP listener not bound, no
// push app configured. Empty means ready.
func (a *App) Ready(ctx context.Context) []string {
	var why []string
	// Checked before a.mu, which Stop holds for the whole drain.
	if a.stopping.Load() {
		return []string{"shutting down"}
	}
	a.mu.Lock()
	started := a.started
	a.mu.Unlock()
	if !started {
		return []string{"not started"}
	}
	if _, err := a.counted.Count(ctx); err != nil {
		why = append(why, "store: "+strings.TrimPrefix(err.Error(), "store: "))
	}
	l := a.cfg.SIP.Listen
	for _, n := range []struct{ network, addr string }{{"udp", l.UDP}, {"tcp", l.TCP}, {"tls", l.TLS}} {
		if n.addr != "" && a.sip.Addr(n.network) == "" {
			why = append(why, fmt.Sprintf("sip: %s listener %s not bound", n.network, n.addr))
		}
	}
	if len(a.pusher.current().Apps()) == 0 {
		why = append(why, "push: no apps configured (push.apps): nobody can be woken")
	}
	return why
}

func (o operator) Ready(ctx context.Context) []string { return o.a.Ready(ctx) }

func (o operator) Counts(ctx context.Context) (admin.Counts, error) {
	a := o.a
	n, err := a.store.Count(ctx)
	if err != nil {
		return admin.Counts{}, err
	}
	return admin.Counts{
		Records:         n,
		TracesOn:        a.relay.Traces().Count(),
		CallsParked:     int(a.gauge("sipwake_calls_parked")),
		StoreSizeBytes:  sizeOf(a.store),
		PendingErasures: pendingErasuresOf(a.store),
	}, nil
}

// gauge reads one unlabelled metric from the registry.
func (a *App) gauge(name string) float64 {
	mfs, err := a.registry.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) == 0 {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

func (o operator) Bindings(ctx context.Context, aor relay.AOR) ([]relay.Binding, error) {
	return o.a.relay.Bindings(ctx, aor)
}

// EraseAOR erases every record of aor: SIP bindings (and their upstream
// registrations, best effort) and handed-over accounts; records that no
// longer decode go by the AOR index.
func (o operator) EraseAOR(ctx context.Context, aor relay.AOR) (int, error) {
	a := o.a
	bs, err := a.relay.Bindings(ctx, aor)
	if err != nil {
		a.log.Warn("erasure: some records of the AOR do not decode; erasing them by index", "aor", aor, "error", err)
		bs = nil
	}
	erased := 0
	for _, b := range bs {
		if b.Account != nil {
			_, err := a.relay.EraseAccount(ctx, a.relay.AccountID(b.Account.App, b.Account.ID), relay.ErasedByRequest)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return erased, err
			}
			erased++
			continue
		}
		if err := a.relay.Erase(ctx, aor, b.Device, relay.ErasedByRequest); err != nil {
			return erased, err
		}
		erased++
		uctx, cancel := context.WithTimeout(ctx, unregisterTimeout)
		if err := a.sip.Unregister(uctx, b); err != nil {
			a.log.Warn("erasure: upstream un-register failed; the registrar drops it at its own expiry",
				"aor", aor, "lapses_at", b.Upstream.LapsesAt(), "error", err)
		}
		cancel()
	}
	rest, err := a.store.DeleteAOR(ctx, string(aor))
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return erased, err
	}
	return erased + len(rest), nil
}

func (o operator) Compact(ctx context.Context) (admin.Compaction, error) {
	a := o.a
	before, start := sizeOf(a.store), time.Now()
	if err := a.counted.Compact(ctx); err != nil {
		return admin.Compaction{}, err
	}
	return admin.Compaction{BytesBefore: before, BytesAfter: sizeOf(a.store), Seconds: time.Since(start).Seconds()}, nil
}

func (o operator) Keys(ctx context.Context) (admin.Keys, error) {
	a := o.a
	// The rotation's state first: counted after it, the usage shows a
	// finished rotation's work (counted before, it may not).
	rotation := a.rotation.get()
	usage, err := a.store.KeyUsage(ctx)
	if err != nil {
		return admin.Keys{}, err
	}
	k := admin.Keys{Active: a.cfg.Seal.KeyID, Usage: usage, Rotation: rotation, Retirable: []string{}}
	if k.Rotation.State == rotationDone {
		for _, p := range a.cfg.Seal.Previous {
			if usage[p.ID] == 0 {
				k.Retirable = append(k.Retirable, p.ID)
			}
		}
	}
	return k, nil
}

// Rotation states.
const (
	rotationIdle    = "idle"
	rotationRunning = "running"
	rotationDone    = "done"
	rotationFailed  = "failed"
)

// rotationState is the background re-seal's progress, for /admin/keys.
type rotationState struct {
	mu sync.Mutex
	r  admin.Rotation
}

func (s *rotationState) get() admin.Rotation {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.r
	if r.State == "" {
		r.State = rotationIdle
	}
	return r
}

func (s *rotationState) set(f func(*admin.Rotation)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(&s.r)
}

// rotate re-seals, under the active key, the records still sealed under a
// previous key, and says which previous keys can then be retired.
func (a *App) rotate(ctx context.Context) {
	before, err := a.store.KeyUsage(ctx)
	if err != nil {
		a.log.Error("key rotation: cannot count key usage", "error", err)
	}
	a.rotation.set(func(r *admin.Rotation) { *r = admin.Rotation{State: rotationRunning, StartedAt: a.now()} })
	a.log.Info("key rotation: re-sealing records under previous keys in the background",
		"active", a.cfg.Seal.KeyID, "usage", before)
	n, err := a.store.Rotate(ctx)
	after, uerr := a.store.KeyUsage(context.WithoutCancel(ctx))
	a.rotation.set(func(r *admin.Rotation) {
		r.Resealed, r.FinishedAt, r.State = n, a.now(), rotationDone
		if err != nil {
			r.State, r.Error = rotationFailed, err.Error()
		}
	})
	if err != nil {
		a.log.Error("key rotation: failed; records under previous keys stay readable while those keys are configured",
			"resealed", n, "error", err)
		return
	}
	var retire []string
	for _, p := range a.cfg.Seal.Previous {
		if uerr == nil && after[p.ID] == 0 {
			retire = append(retire, p.ID)
		}
	}
	slices.Sort(retire)
	a.log.Info("key rotation: done", "resealed", n, "usage", after,
		"retirable", retire, "next", "remove the retirable ids from seal.previous and restart")
}
