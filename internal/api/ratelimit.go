package api

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxSources bounds the per-source limiter table; idle entries are dropped
// when it fills, and a flood of fresh addresses beyond it is refused.
const maxSources = 50_000

// sourceIdle is how long an unused per-source limiter is kept.
const sourceIdle = 10 * time.Minute

type limiters struct {
	cfg RateLimit
	now func() time.Time

	mu      sync.Mutex
	keys    map[string]*rate.Limiter
	sources map[string]*sourceLimiter
}

type sourceLimiter struct {
	lim  *rate.Limiter
	seen time.Time
}

func newLimiters(cfg RateLimit, now func() time.Time) *limiters {
	return &limiters{cfg: cfg, now: now, keys: map[string]*rate.Limiter{}, sources: map[string]*sourceLimiter{}}
}

// allowKey spends one token of app's bucket. Apps are few (from config),
// so their table needs no eviction.
func (l *limiters) allowKey(app string) bool {
	l.mu.Lock()
	lim, ok := l.keys[app]
	if !ok {
		lim = rate.NewLimiter(rate.Limit(l.cfg.PerKey), l.cfg.PerKeyBurst)
		l.keys[app] = lim
	}
	l.mu.Unlock()
	return lim.AllowN(l.now(), 1)
}

// allowSource spends one token of the source IP's bucket.
func (l *limiters) allowSource(ip string) bool {
	now := l.now()
	l.mu.Lock()
	s, ok := l.sources[ip]
	if !ok {
		if len(l.sources) >= maxSources {
			for k, v := range l.sources {
				if now.Sub(v.seen) > sourceIdle {
					delete(l.sources, k)
				}
			}
		}
		if len(l.sources) >= maxSources {
			l.mu.Unlock()
			return false
		}
		s = &sourceLimiter{lim: rate.NewLimiter(rate.Limit(l.cfg.PerSource), l.cfg.PerSourceBurst)}
		l.sources[ip] = s
	}
	s.seen = now
	l.mu.Unlock()
	return s.lim.AllowN(now, 1)
}
