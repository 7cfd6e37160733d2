package store

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// SweepBatch is how many expired records the Sweeper takes, and hands to
// onExpired, at a time.
const SweepBatch = 1024

// SweepStore is what the Sweeper needs from a store.
type SweepStore interface {
	TakeExpired(ctx context.Context, now time.Time, limit int) ([]Record, error)
	Compact(ctx context.Context) error
}

// pendingErasures is implemented by stores (Bolt) that know how many
// erasures since the last Compact may have left ciphertext in free pages,
// including those made outside the Sweeper (Delete, replacing Puts).
type pendingErasures interface {
	PendingErasures() int64
}

// Sweeper erases expired records on a schedule, hands them to onExpired (the
// relay un-registers them upstream), and compacts the store after erasures,
// at most once per compactEvery, so erased ciphertext does not linger in
// free pages.
type Sweeper struct {
	st           SweepStore
	interval     time.Duration
	compactEvery time.Duration
	now          func() time.Time
	onExpired    func(context.Context, []Record)
	log          *slog.Logger

	mu          sync.Mutex // one sweep at a time
	erased      int        // by this sweeper since the last compaction
	lastCompact time.Time  // zero: compact at the first chance
}

// NewSweeper builds a sweeper. interval is how often Run sweeps;
// compactEvery is the least time between compactions (<= 0: after every
// sweep that erased something); now is the clock that decides what has
// expired (nil: time.Now); onExpired may be nil; log may be nil.
func NewSweeper(st SweepStore, interval, compactEvery time.Duration, now func() time.Time, onExpired func(context.Context, []Record), log *slog.Logger) *Sweeper {
	if now == nil {
		now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = time.Minute
	}
	return &Sweeper{st: st, interval: interval, compactEvery: compactEvery, now: now, onExpired: onExpired, log: log}
}

// Run sweeps at once and then every interval until ctx is done; it returns
// nil then. A failed sweep is logged and retried at the next tick.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		if _, err := s.SweepOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("store: sweep failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// SweepOnce erases every record expired at now(), in batches handed to
// onExpired, then compacts if due. It returns how many records it erased.
func (s *Sweeper) SweepOnce(ctx context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	total := 0
	for {
		recs, err := s.st.TakeExpired(ctx, now, SweepBatch)
		if err != nil {
			return total, fmt.Errorf("sweep: %w", err)
		}
		if len(recs) == 0 {
			break
		}
		total += len(recs)
		s.erased += len(recs)
		if s.onExpired != nil {
			s.onExpired(ctx, recs)
		}
	}
	if total > 0 {
		s.log.Info("store: expired records erased", "count", total)
	}
	return total, s.maybeCompact(ctx, now)
}

func (s *Sweeper) maybeCompact(ctx context.Context, now time.Time) error {
	dirty := s.erased > 0
	if p, ok := s.st.(pendingErasures); ok && p.PendingErasures() > 0 {
		dirty = true
	}
	if !dirty {
		return nil
	}
	if !s.lastCompact.IsZero() && s.compactEvery > 0 && now.Sub(s.lastCompact) < s.compactEvery {
		return nil
	}
	if err := s.st.Compact(ctx); err != nil {
		return fmt.Errorf("sweep: compact: %w", err)
	}
	s.erased = 0
	s.lastCompact = now
	return nil
}
