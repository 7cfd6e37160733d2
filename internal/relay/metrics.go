package relay

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the relay's aggregate counters: no AOR, number or token is
// ever a label.
type Metrics struct {
	parked   prometheus.Gauge
	dispatch prometheus.Histogram
	erased   *prometheus.CounterVec
	stored   prometheus.Counter
	// refreshesUnwritten counts refreshes that changed nothing but the
	// time and were not written (Options.RefreshStaleness).
	refreshesUnwritten prometheus.Counter
	wakeups            *prometheus.CounterVec
	pushCapped         prometheus.Counter
}

// NewMetrics creates the relay's metrics and registers them on reg (nil:
// kept but not exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		parked: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipwake_calls_parked", Help: "Calls held right now while their devices are woken.",
		}),
		dispatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sipwake_call_push_latency_seconds",
			Help:    "From an INVITE's arrival to its call push accepted by the push service.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		erased: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipwake_bindings_erased_total", Help: "Bindings erased, by why.",
		}, []string{"reason"}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sipwake_bindings_stored_total", Help: "Bindings stored or refreshed after the registrar's 2xx.",
		}),
		wakeups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipwake_wakeups_total", Help: "Pushes sent without a call: binding refresh, expiry warnings.",
		}, []string{"kind"}),
	}
	m.refreshesUnwritten = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sipwake_binding_refreshes_unwritten_total",
		Help: "Refreshes that changed nothing but the time, within store.refresh_staleness, and were not written.",
	})
	m.pushCapped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "sipwake_call_pushes_capped_total", Help: "Call pushes not sent because one device got too many calls per minute.",
	})
	if reg != nil {
		reg.MustRegister(m.parked, m.dispatch, m.erased, m.stored, m.refreshesUnwritten, m.wakeups, m.pushCapped)
	}
	return m
}

// Parked moves the parked-calls gauge by delta (+1 on park, -1 on end).
func (m *Metrics) Parked(delta float64) { m.parked.Add(delta) }

// PushLatency records INVITE-to-push time.
func (m *Metrics) PushLatency(d time.Duration) { m.dispatch.Observe(d.Seconds()) }

func (m *Metrics) erasedFor(reason string) { m.erased.WithLabelValues(reason).Inc() }
