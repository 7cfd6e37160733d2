// Package limit is a token bucket per key (a source address, a device), so
// one noisy key is slowed down and every other key is not. Idle buckets are
// dropped, so memory stays bounded by the keys active in a window. It knows
// nothing of what the keys mean.
package limit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// sweepEvery is how often idle buckets are dropped.
const sweepEvery = time.Minute

// Keyed holds one bucket per key.
type Keyed[K comparable] struct {
	every rate.Limit
	burst int
	now   func() time.Time

	mu      sync.Mutex
	buckets map[K]*rate.Limiter
	swept   time.Time
}

// New allows perSecond events per key on average and burst at once; a
// perSecond of 0 or less allows everything.
func New[K comparable](perSecond float64, burst int, now func() time.Time) *Keyed[K] {
	return &Keyed[K]{every: rate.Limit(perSecond), burst: burst, now: now, buckets: map[K]*rate.Limiter{}, swept: now()}
}

// Allow takes one token for key; false means refuse.
func (l *Keyed[K]) Allow(key K) bool {
	if l == nil || l.every <= 0 {
		return true
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > sweepEvery {
		for k, b := range l.buckets {
			if b.TokensAt(now) >= float64(l.burst) {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = rate.NewLimiter(l.every, l.burst)
		l.buckets[key] = b
	}
	return b.AllowN(now, 1)
}

// Len is the number of buckets held.
func (l *Keyed[K]) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
