package handover_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
	"github.com/sipwake/sipwake/internal/store"
)

// slowRecords is a store whose scans outlive their context, as a Redis
// SCAN in flight does: the scan after the first (a rescan) says it began,
// then ends a moment later whatever the context says.
type slowRecords struct {
	scans    atomic.Int32
	rescan   chan struct{}
	finished atomic.Bool
}

func (r *slowRecords) ScanAccounts(ctx context.Context, fn func(store.Record) error) error {
	if r.scans.Add(1) == 2 {
		close(r.rescan)
		time.Sleep(100 * time.Millisecond)
		r.finished.Store(true)
	}
	return ctx.Err()
}

type noLeases struct{}

func (noLeases) Hold(context.Context, store.ID, time.Duration) (bool, time.Duration, error) {
	return true, 0, nil
}
func (noLeases) Release(context.Context, store.ID) error { return nil }

// Stop waits for a rescan in flight, so nothing reads the store after Stop
// returns (and the app closes it).
func TestStopWaitsForRescan(t *testing.T) {
	t.Parallel()
	records := &slowRecords{rescan: make(chan struct{})}
	k, err := handover.New(nil, records, handover.Options{
		ContactFor: func(store.ID, string) string { return "sip:sw@127.0.0.1" },
		Leases:     noLeases{},
		Rescan:     time.Millisecond,
	}, handovertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-records.rescan:
	case <-time.After(5 * time.Second):
		t.Fatal("no rescan within 5s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := k.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !records.finished.Load() {
		t.Fatal("Stop returned while a rescan still read the store")
	}
}
