package sip

import "github.com/prometheus/client_golang/prometheus"

// REGISTER outcomes, as counted in sipwake_sip_registers_total.
const (
	regStored         = "stored"          // push binding stored after the registrar's 2xx
	regUnregistered   = "unregistered"    // Expires: 0 accepted upstream
	regPassThrough    = "pass_through"    // no pn-* parameters
	regQuery          = "query"           // bare pn-provider
	regUnsupported    = "unsupported"     // 555
	regBadRequest     = "bad_request"     // 400
	regUpstreamFailed = "upstream_failed" // registrar unreachable or silent
	regUpstreamDenied = "upstream_denied" // registrar's final non-2xx (challenges included)
	regStoreFailed    = "store_failed"    // 500: binding not stored
	regRateLimited    = "rate_limited"    // 503: the source sent too many
	regOverloaded     = "overloaded"      // 503: too many waiting on the registrar
)

// Call outcomes, as counted in sipwake_calls_total.
const (
	callDelivered = "delivered" // a device answered (2xx)
	callRejected  = "rejected"  // devices answered, none with 2xx
	callTimedOut  = "timed_out" // no device within the wait
	callCancelled = "cancelled" // the caller gave up
	callFailed    = "failed"    // no device could be woken or reached
)

// Metrics are the SIP side's counters: aggregate only.
type Metrics struct {
	registers *prometheus.CounterVec
	calls     *prometheus.CounterVec
}

// NewMetrics creates the SIP metrics on reg (nil: not exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		registers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipwake_sip_registers_total", Help: "REGISTERs through sipwake, by outcome.",
		}, []string{"outcome"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipwake_calls_total", Help: "Calls and MESSAGEs for bindings, by outcome.",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.registers, m.calls)
	}
	return m
}

func (m *Metrics) register(outcome string) { m.registers.WithLabelValues(outcome).Inc() }

func (m *Metrics) callEnded(outcome string) { m.calls.WithLabelValues(outcome).Inc() }
