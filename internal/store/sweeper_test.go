package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// fakeClock is moved by the test; the sweeper reads it.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestSweeperErasesOnTimeAndCompacts(t *testing.T) {
	t.Parallel() // its own file; fsync-bound, so it overlaps the others
	ctx := t.Context()
	b := openAt(t, tempDB(t), testKeyring(t, "a"))
	clock := &fakeClock{t: testBase()}
	const n = SweepBatch + 50   // more than one batch
	ids := putMany(t, b, n, 10) // expiries: base + 3 days + i seconds
	var (
		mu      sync.Mutex
		handed  []Record
		batches int
	)
	onExpired := func(_ context.Context, rs []Record) {
		mu.Lock()
		defer mu.Unlock()
		batches++
		handed = append(handed, rs...)
	}
	s := NewSweeper(b, time.Minute, time.Hour, clock.Now, onExpired, testLog(t))

	// Nothing due yet: nothing erased, no compaction (nothing was freed).
	clock.Advance(3*day - time.Second)
	if got, err := s.SweepOnce(ctx); err != nil || got != 0 {
		t.Fatalf("SweepOnce before expiry = %d, %v", got, err)
	}
	if !s.lastCompact.IsZero() {
		t.Fatal("compacted with nothing erased")
	}

	// Three days in, all n records (expiring over n seconds) go.
	clock.Advance(time.Second + n*time.Second)
	got, err := s.SweepOnce(ctx)
	if err != nil || got != n {
		t.Fatalf("SweepOnce at expiry = %d, %v; want %d", got, err, n)
	}
	if len(handed) != n || batches != 2 {
		t.Fatalf("onExpired got %d records in %d batches, want %d in 2", len(handed), batches, n)
	}
	if handed[0].ID != ids[0] || handed[0].AOR == "" {
		t.Fatalf("onExpired got %s %q first, want the soonest record with its content", handed[0].ID, handed[0].AOR)
	}
	if c, _ := b.Count(ctx); c != 0 {
		t.Fatalf("Count after sweep = %d", c)
	}
	if s.lastCompact.IsZero() || b.PendingErasures() != 0 {
		t.Fatal("no compaction after erasures")
	}

	// An erasure outside the sweeper (a Delete) is compacted too, but not
	// before compactEvery has passed since the last compaction.
	r := Record{ID: b.ID("sip:x@x", "d"), AOR: "sip:x@x", ExpiresAt: clock.Now().Add(5 * day), Data: []byte("x")}
	if err := b.Put(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Delete(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	last := s.lastCompact
	clock.Advance(30 * time.Minute)
	if _, err := s.SweepOnce(ctx); err != nil || !s.lastCompact.Equal(last) {
		t.Fatalf("compacted again within compactEvery (err %v)", err)
	}
	clock.Advance(31 * time.Minute)
	if _, err := s.SweepOnce(ctx); err != nil || s.lastCompact.Equal(last) || b.PendingErasures() != 0 {
		t.Fatalf("did not compact after compactEvery (err %v)", err)
	}
}

// countingStore records calls, to test the sweeper's policy alone.
type countingStore struct {
	mu       sync.Mutex
	expired  []Record
	compacts int
	takeErr  error
}

func (c *countingStore) TakeExpired(_ context.Context, now time.Time, limit int) ([]Record, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.takeErr != nil {
		return nil, c.takeErr
	}
	var out, keep []Record
	for _, r := range c.expired {
		if !r.ExpiresAt.After(now) && len(out) < limit {
			out = append(out, r)
		} else {
			keep = append(keep, r)
		}
	}
	c.expired = keep
	return out, nil
}

func (c *countingStore) Compact(context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.compacts++
	return nil
}

func TestSweeperRunStopsOnCancel(t *testing.T) {
	clock := &fakeClock{t: testBase()}
	st := &countingStore{expired: []Record{{ID: ID{1}, ExpiresAt: testBase()}}}
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan []Record, 1)
	s := NewSweeper(st, time.Hour, 0, clock.Now, func(_ context.Context, rs []Record) { got <- rs }, nil)
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	// Run sweeps at once on start, without waiting for the first tick.
	if rs := <-got; len(rs) != 1 {
		t.Fatalf("onExpired got %d", len(rs))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v", err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.compacts != 1 {
		t.Fatalf("compacts = %d, want 1 (compactEvery 0: after every erasing sweep)", st.compacts)
	}
}

func TestSweeperReportsStoreErrors(t *testing.T) {
	boom := errors.New("disk on fire")
	s := NewSweeper(&countingStore{takeErr: boom}, time.Minute, time.Hour, nil, nil, nil)
	if _, err := s.SweepOnce(t.Context()); !errors.Is(err, boom) {
		t.Fatalf("SweepOnce = %v, want the store's error", err)
	}
}
