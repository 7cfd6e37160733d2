package bench

import (
	"fmt"
	"math"
	"testing"
)

// levelRule is the soak's verdict on one measured series (a node's RSS,
// goroutines, open files, records, store size), sampled at equal intervals
// from the start of the load. The first third of the samples is warm-up
// (caches, pools, the store and the heap floor filling) and is not judged.
// The series levels off when the mean of the last third is at most the
// mean of the middle third times (1+Rel), plus Abs (a floor for small
// counts, where one goroutine or one file is already 10%). Fewer than
// levelMinSamples samples are not judged at all.
//
// What it catches: growth that goes on at a steady pace. On n samples a
// series growing by g per sample has a last-third mean k·g above the
// middle third's (k = n/3), so with the 30 one-minute samples of the
// default soak it fails on growth above (Rel·level + Abs)/10 per minute.
// What it lets through: growth within the tolerance over the run's length
// (a slower leak needs a longer soak), and growth that only shows in the
// warm-up.
type levelRule struct {
	Rel, Abs float64
}

// The soak's rules per measured series. RSS in KiB: 5% and 2 MiB catch a
// leak of 0.75 MiB a minute or more at ~110 MiB (a node under the soak's
// load) over a 30-minute soak.
// Goroutines and open files: 5% and 5 catch one a minute at ~40.
// Records and store size follow the churn (registrations in, expiries
// out), so they get 10%: a store that keeps what it should drop doubles.
var (
	ruleRSS     = levelRule{Rel: 0.05, Abs: 2 << 10}
	ruleCount   = levelRule{Rel: 0.05, Abs: 5}
	ruleRecords = levelRule{Rel: 0.10, Abs: 50}
	ruleBytes   = levelRule{Rel: 0.10, Abs: 1 << 20}
)

// levelMinSamples: with fewer, a third is one sample or none.
const levelMinSamples = 6

// levelVerdict is levelRule.judge's answer.
type levelVerdict struct {
	Judged       bool
	Middle, Last float64 // means of the middle and last thirds
	Limit        float64 // the most Last may be
}

// Grew: judged, and the last third's mean is over the limit.
func (v levelVerdict) Grew() bool { return v.Judged && v.Last > v.Limit }

func (v levelVerdict) String() string {
	switch {
	case !v.Judged:
		return "not judged (too few samples)"
	case v.Grew():
		return fmt.Sprintf("GREW: last third %.1f > %.1f (middle third %.1f)", v.Last, v.Limit, v.Middle)
	}
	return fmt.Sprintf("level: last third %.1f ≤ %.1f (middle third %.1f)", v.Last, v.Limit, v.Middle)
}

// judge applies the rule to xs. n samples split into thirds of k = n/3
// from the end: the last k, the k before them, and the rest (warm-up).
func (r levelRule) judge(xs []float64) levelVerdict {
	n := len(xs)
	if n < levelMinSamples {
		return levelVerdict{}
	}
	k := n / 3
	mid, last := mean(xs[n-2*k:n-k]), mean(xs[n-k:])
	return levelVerdict{Judged: true, Middle: mid, Last: last, Limit: mid*(1+r.Rel) + r.Abs}
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// TestLevelRule holds the rule to synthetic series: it must fail a leak
// and pass what levels off, or the soak could not fail.
func TestLevelRule(t *testing.T) {
	const n = 30 // the default soak: 30 one-minute samples
	rss := ruleRSS
	series := func(f func(i int) float64) []float64 {
		xs := make([]float64, n)
		for i := range xs {
			// ±3% of deterministic wobble, as GC cycles give RSS.
			xs[i] = f(i) * (1 + 0.03*math.Sin(float64(i)*1.7))
		}
		return xs
	}
	const base = 70 << 10 // 70 MiB in KiB
	for _, tc := range []struct {
		name string
		xs   []float64
		grew bool
	}{
		{"flat", series(func(int) float64 { return base }), false},
		{"warm-up ramp, then flat", series(func(i int) float64 { return base * min(1, 0.5+float64(i)/20) }), false},
		{"leak of 1 MiB a minute", series(func(i int) float64 { return base + float64(i)*(1<<10) }), true},
		{"leak of 2% a minute", series(func(i int) float64 { return base * (1 + 0.02*float64(i)) }), true},
		{"step up in the last third", series(func(i int) float64 {
			if i >= 2*n/3 {
				return base * 1.25
			}
			return base
		}), true},
		{"slow growth within the tolerance (0.2 MiB a minute)", series(func(i int) float64 { return base + float64(i)*205 }), false},
	} {
		v := rss.judge(tc.xs)
		if !v.Judged || v.Grew() != tc.grew {
			t.Errorf("%s: %v, want grew=%v", tc.name, v, tc.grew)
		}
	}

	// Goroutines: a leak of one a minute (a goroutine per handed-over
	// account churned, say) is caught over the floor of 5; a count that
	// moves by a few with the calls in flight is not.
	g := ruleCount
	leak, busy := make([]float64, n), make([]float64, n)
	for i := range leak {
		leak[i] = 40 + float64(i)
		busy[i] = float64(40 + (i*7)%5)
	}
	if v := g.judge(leak); !v.Grew() {
		t.Errorf("goroutines +1 a minute: %v, want grew", v)
	}
	if v := g.judge(busy); v.Grew() {
		t.Errorf("goroutines 40–44: %v, want level", v)
	}
	if v := g.judge([]float64{40, 41, 39, 40, 80}); v.Judged {
		t.Errorf("5 samples: %v, want not judged", v)
	}
}
