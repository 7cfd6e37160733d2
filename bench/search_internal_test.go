package bench

import (
	"slices"
	"testing"
	"time"
)

// TestFindMaxRate runs the search against simulated peers that complete
// everything up to a capacity and drop the excess.
func TestFindMaxRate(t *testing.T) {
	plan := searchPlan{Start: 500, Max: 16000, Step: 50, Precision: 0.12,
		Short: time.Second, Sustain: 10 * time.Second, Confirms: 3}
	for _, tc := range []struct {
		name           string
		capacity       int
		sustainPenalty float64 // capacity lost on long runs (e.g. a filling table)
		wantLo, wantHi int
	}{
		{name: "mid", capacity: 3300, wantLo: 2900, wantHi: 3300},
		{name: "below start", capacity: 180, wantLo: 150, wantHi: 180},
		{name: "above max", capacity: 40000, wantLo: 16000, wantHi: 16000},
		{name: "weaker when sustained", capacity: 3300, sustainPenalty: 0.2, wantLo: 2100, wantHi: 2640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			peer := func(rate int, d time.Duration) probe {
				c := float64(tc.capacity)
				if d >= plan.Sustain {
					c *= 1 - tc.sustainPenalty
				}
				calls := rate * int(d/time.Second)
				ok := calls
				if float64(rate) > c {
					ok = int(c * d.Seconds())
				}
				// sipp's creation is held to what the peer completes
				// (-l); one rate per whole second of creation.
				created := slices.Repeat([]float64{min(float64(rate), c)}, max(int(d/time.Second)-1, 1))
				return probe{Target: rate, Calls: calls, Successful: ok, Failed: calls - ok, Elapsed: d, Rates: created}
			}
			got, tried := findMaxRate(plan, peer)
			if !got.Sustained() || got.Target < tc.wantLo || got.Target > tc.wantHi {
				t.Errorf("findMaxRate = %v, want a sustained rate in [%d, %d]; tried %v", got, tc.wantLo, tc.wantHi, tried)
			}
			if len(tried) > 12 {
				t.Errorf("%d probes, want the search bounded to 12: %v", len(tried), tried)
			}
		})
	}
}
