package app

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/internal/store"
)

// countedStore counts the sweeper's passes and compactions on their way to
// the store.
type countedStore struct {
	Records
	sweeps, compactions prometheus.Counter
}

func newCountedStore(st Records, reg prometheus.Registerer) countedStore {
	c := countedStore{
		Records:     st,
		sweeps:      prometheus.NewCounter(prometheus.CounterOpts{Name: "sipwake_store_sweeps_total", Help: "Sweeper passes over expired records."}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "sipwake_store_compactions_total", Help: "Copy-compactions of the database file."}),
	}
	reg.MustRegister(c.sweeps, c.compactions)
	return c
}

func (c countedStore) TakeExpired(ctx context.Context, now time.Time, limit int) ([]store.Record, error) {
	c.sweeps.Inc()
	return c.Records.TakeExpired(ctx, now, limit)
}

// PendingErasures lets the sweeper see erasures made outside it.
func (c countedStore) PendingErasures() int64 { return pendingErasuresOf(c.Records) }

func (c countedStore) Compact(ctx context.Context) error {
	c.compactions.Inc()
	return c.Records.Compact(ctx)
}
