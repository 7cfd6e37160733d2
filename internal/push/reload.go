package push

import (
	"fmt"
)

// Renew builds a Dispatcher for cfg that reads its key and certificate files
// afresh, for a reload (SIGHUP) after credentials were rotated on disk. The
// new Dispatcher shares d's metrics, clock, backoff and logger, so counters
// carry on; d keeps working until its owner closes it, which it should do
// only once the pushes in flight on d have returned. On error d is
// unaffected.
func (d *Dispatcher) Renew(cfg Config) (*Dispatcher, error) {
	if err := cfg.Validate().Err(); err != nil {
		return nil, err
	}
	n := cfg.MaxInFlight
	if n == 0 {
		n = defaultMaxInFlight
	}
	fresh := &Dispatcher{
		log:      d.log,
		now:      d.now,
		backoff:  d.backoff,
		newFCM:   d.newFCM,
		seed:     d.seed,
		onceSeen: map[string]struct{}{},
		sent:     d.sent,
		dur:      d.dur,
		sem:      make(chan struct{}, n),
	}
	for i, ac := range cfg.Apps {
		a, err := fresh.buildApp(ac)
		if err != nil {
			fresh.Close()
			return nil, fmt.Errorf("push.apps[%d] (%s): %w", i, ac.Name, err)
		}
		fresh.apps = append(fresh.apps, a)
	}
	return fresh, nil
}

// Apps names the configured apps, in config order.
func (d *Dispatcher) Apps() []string {
	out := make([]string, len(d.apps))
	for i, a := range d.apps {
		out[i] = a.name
	}
	return out
}
