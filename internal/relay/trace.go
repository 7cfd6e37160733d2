package relay

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultTraceFor is how long a troubleshooting trace stays on when the
// operator does not say.
const DefaultTraceFor = time.Hour

// Traces are the AORs an operator is troubleshooting: for them, and only
// until the trace runs out, logs carry the full AOR, token and SIP
// messages. Everything else stays masked.
type Traces struct {
	now   func() time.Time
	mu    sync.Mutex
	until map[AOR]time.Time
}

// NewTraces starts with no trace on; now is the clock.
func NewTraces(now func() time.Time) *Traces {
	return &Traces{now: now, until: map[AOR]time.Time{}}
}

// On starts (or extends) a trace for aor for d (DefaultTraceFor if 0).
func (t *Traces) On(aor AOR, d time.Duration) time.Time {
	if d <= 0 {
		d = DefaultTraceFor
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	end := t.now().Add(d)
	t.until[aor] = end
	return end
}

// Off stops a trace at once.
func (t *Traces) Off(aor AOR) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.until, aor)
}

// Active tells whether aor is traced now; a trace that ran out switches
// itself off here.
func (t *Traces) Active(aor AOR) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	end, ok := t.until[aor]
	if ok && !t.now().Before(end) {
		delete(t.until, aor)
		return false
	}
	return ok
}

// Count is how many traces are on.
func (t *Traces) Count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for aor := range t.until {
		if t.now().Before(t.until[aor]) {
			n++
		}
	}
	return n
}

// Log writes a trace line for aor with its full details, only while a
// trace is on for it. Values that are fmt.Stringers (a whole SIP message)
// are turned into text only then: the hot path pays nothing for traces
// that are off.
func (t *Traces) Log(log *slog.Logger, aor AOR, msg string, args ...any) {
	if !t.Active(aor) {
		return
	}
	for i, a := range args {
		if s, ok := a.(fmt.Stringer); ok {
			args[i] = s.String()
		}
	}
	log.Info(msg, append([]any{"trace", true, "aor_full", string(aor)}, args...)...)
}
