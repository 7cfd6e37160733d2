package app

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/internal/store"
)

// countedStore is the store as the relay, the handover registrations and
// the sweeper use it: it counts the sweeper's passes and compactions, and
// the operations the store failed (Redis unreachable or out of memory, a
// full disk), by operation only.
type countedStore struct {
	Records
	sweeps, compactions prometheus.Counter
	errors              *prometheus.CounterVec
}

func newCountedStore(st Records, reg prometheus.Registerer) countedStore {
	c := countedStore{
		Records:     st,
		sweeps:      prometheus.NewCounter(prometheus.CounterOpts{Name: "sipwake_store_sweeps_total", Help: "Sweeper passes over expired records."}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "sipwake_store_compactions_total", Help: "Copy-compactions of the database file."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipwake_store_errors_total", Help: "Store operations that failed (not counting records not found), by operation.",
		}, []string{"op"}),
	}
	for _, op := range []string{"put", "get", "list_aor", "delete", "scan_due", "scan_accounts", "take_expired", "count"} {
		c.errors.WithLabelValues(op) // every series exists from the start, at 0
	}
	reg.MustRegister(c.sweeps, c.compactions, c.errors)
	return c
}

// failed counts err against op unless it is an answer rather than a
// failure: not found, the caller gone, the store closed at shutdown.
func (c countedStore) failed(op string, err error) error {
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, context.Canceled) && !errors.Is(err, store.ErrClosed) {
		c.errors.WithLabelValues(op).Inc()
	}
	return err
}

func (c countedStore) Put(ctx context.Context, r store.Record) error {
	return c.failed("put", c.Records.Put(ctx, r))
}

func (c countedStore) Get(ctx context.Context, id store.ID) (store.Record, error) {
	r, err := c.Records.Get(ctx, id)
	return r, c.failed("get", err)
}

func (c countedStore) ListAOR(ctx context.Context, aor string) ([]store.Record, error) {
	rs, err := c.Records.ListAOR(ctx, aor)
	return rs, c.failed("list_aor", err)
}

func (c countedStore) Delete(ctx context.Context, id store.ID) (store.Record, error) {
	r, err := c.Records.Delete(ctx, id)
	return r, c.failed("delete", err)
}

func (c countedStore) ScanDue(ctx context.Context, until time.Time, fn func(store.Record) error) error {
	return c.failed("scan_due", c.Records.ScanDue(ctx, until, fn))
}

func (c countedStore) ScanAccounts(ctx context.Context, fn func(store.Record) error) error {
	return c.failed("scan_accounts", c.Records.ScanAccounts(ctx, fn))
}

func (c countedStore) Count(ctx context.Context) (int, error) {
	n, err := c.Records.Count(ctx)
	return n, c.failed("count", err)
}

func (c countedStore) TakeExpired(ctx context.Context, now time.Time, limit int) ([]store.Record, error) {
	c.sweeps.Inc()
	rs, err := c.Records.TakeExpired(ctx, now, limit)
	return rs, c.failed("take_expired", err)
}

// PendingErasures lets the sweeper see erasures made outside it.
func (c countedStore) PendingErasures() int64 { return pendingErasuresOf(c.Records) }

func (c countedStore) Compact(ctx context.Context) error {
	c.compactions.Inc()
	return c.Records.Compact(ctx)
}
