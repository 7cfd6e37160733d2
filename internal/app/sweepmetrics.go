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
	*store.Bolt
	sweeps, compactions prometheus.Counter
}

func newCountedStore(st *store.Bolt, reg prometheus.Registerer) countedStore {
	c := countedStore{
		Bolt:        st,
		sweeps:      prometheus.NewCounter(prometheus.CounterOpts{Name: "sipwake_store_sweeps_total", Help: "Sweeper passes over expired records."}),
		compactions: prometheus.NewCounter(prometheus.CounterOpts{Name: "sipwake_store_compactions_total", Help: "Copy-compactions of the database file."}),
	}
	reg.MustRegister(c.sweeps, c.compactions)
	return c
}

func (c countedStore) TakeExpired(ctx context.Context, now time.Time, limit int) ([]store.Record, error) {
	c.sweeps.Inc()
	return c.Bolt.TakeExpired(ctx, now, limit)
}

func (c countedStore) Compact(ctx context.Context) error {
	c.compactions.Inc()
	return c.Bolt.Compact(ctx)
}
