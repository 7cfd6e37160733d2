package push

import (
	"hash/maphash"
	"sync"
	"time"
)

const (
	healthWindow = 32        // recent token outcomes kept per app
	healthMaxAge = time.Hour // older outcomes say nothing about today's config
)

// tokenHealth is an app's sliding window of recent per-token outcomes. A
// rejected token is only erased when other tokens of the same app still get
// through; when most recent tokens are rejected the app is pointed at the
// wrong APNs environment or topic, and erasing would wipe every user.
type tokenHealth struct {
	mu       sync.Mutex
	ring     [healthWindow]healthEntry
	next     int
	mismatch bool
}

type healthEntry struct {
	tok  uint64 // keyed hash; the token itself is not kept
	good bool   // the provider recognised the token (delivered or 410)
	at   time.Time
}

// judge records res for token in the endpoint's window and returns
// Result.EraseRecord.
func (d *Dispatcher) judge(a *app, e *endpoint, token string, res Result) bool {
	var good bool
	switch res.Outcome {
	case Delivered, TokenDead:
		// A 410 also proves the environment and topic are right.
		good = true
	case TokenRejected:
	default:
		return false
	}
	tok := maphash.String(d.seed, token)
	now := d.now()
	h := &e.health
	h.mu.Lock()
	defer h.mu.Unlock()

	others, rejected := 0, 1
	for _, e := range h.ring {
		if e.at.IsZero() || e.tok == tok || now.Sub(e.at) > healthMaxAge {
			continue
		}
		if e.good {
			others++
		} else {
			rejected++
		}
	}
	h.ring[h.next] = healthEntry{tok: tok, good: good, at: now}
	h.next = (h.next + 1) % healthWindow

	if good {
		if h.mismatch && others+1 >= rejected {
			h.mismatch = false
			d.log.Info("push: app's tokens deliver again", "app", a.name)
		}
		return res.Outcome == TokenDead
	}
	erase := others > 0 && rejected <= others
	if !erase && rejected >= 2 && !h.mismatch {
		h.mismatch = true
		d.log.Error("push: most recent tokens of this app are rejected; keeping the records. "+
			"Check the APNs endpoint (sandbox vs production), the bundle id/topic or the Firebase project",
			"app", a.name, "provider", a.provider, "reason", res.Reason,
			"rejected", rejected, "delivering", others)
	}
	return erase
}
