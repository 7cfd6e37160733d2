package bench

import (
	"fmt"
	"time"
)

// probe is one sipp run at a fixed target rate.
type probe struct {
	Target     int           // sipp -r, REGISTER/s
	Calls      int           // sipp -m
	Successful int           // registrations that reached the 200
	Failed     int           // sipp's failed calls
	Elapsed    time.Duration // sipp's own elapsed time for the run
	CPU        cpuUse        // what each hop spent on the run
}

// Achieved is the completed registrations per second of the run.
func (p probe) Achieved() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Successful) / p.Elapsed.Seconds()
}

// FailedShare is the share of requested calls that did not complete:
// sipp's failed calls and the ones still unanswered when it gave up, so a
// run cut short by sipp's timeout never looks clean.
func (p probe) FailedShare() float64 {
	if p.Calls == 0 {
		return 1
	}
	return 1 - float64(p.Successful)/float64(p.Calls)
}

// Sustained reports whether the set-up kept up: under 1% of the calls
// failed and sipp was not held back (by -l, i.e. by a slow peer) below
// 95% of the rate it was asked for.
func (p probe) Sustained() bool {
	return p.FailedShare() < 0.01 && p.Achieved() >= 0.95*float64(p.Target)
}

func (p probe) String() string {
	return fmt.Sprintf("-r %d: %d/%d ok, %d failed, %.0f/s in %v",
		p.Target, p.Successful, p.Calls, p.Failed, p.Achieved(), p.Elapsed.Round(time.Millisecond))
}

// searchPlan bounds the search for the highest sustained rate.
type searchPlan struct {
	Start, Max int           // first and highest -r tried
	Step       int           // rates are rounded to multiples of Step
	Precision  float64       // bisect until hi/lo <= 1+Precision
	Short      time.Duration // length of a ramp/bisection probe
	Sustain    time.Duration // length of the confirming run
	Confirms   int           // confirming runs tried, each 15% lower
}

// defaultPlan keeps one set-up's search to about a minute on a 2-core VM:
// a doubling ramp and bisection with 3 s probes, then 10 s at the result.
var defaultPlan = searchPlan{
	Start: 500, Max: 16000, Step: 50, Precision: 0.12,
	Short: 3 * time.Second, Sustain: 10 * time.Second, Confirms: 3,
}

// findMaxRate ramps -r up by doubling until a probe fails, bisects between
// the last good and the first bad rate, and confirms the result with a
// Sustain-long run, stepping down 15% while that fails. It returns the
// confirming run (Sustained() false if none held) and every probe made.
func findMaxRate(plan searchPlan, run func(rate int, d time.Duration) probe) (probe, []probe) {
	var tried []probe
	try := func(rate int, d time.Duration) probe {
		p := run(rate, d)
		tried = append(tried, p)
		return p
	}
	round := func(r int) int {
		r = (r + plan.Step/2) / plan.Step * plan.Step
		return max(r, plan.Step)
	}

	lo, hi := 0, 0
	for r := plan.Start; r <= plan.Max; r *= 2 {
		if !try(r, plan.Short).Sustained() {
			hi = r
			break
		}
		lo = r
	}
	// Failed at the first rate: halve until something holds.
	for lo == 0 && hi > plan.Step {
		r := round(hi / 2)
		if r >= hi {
			break
		}
		if try(r, plan.Short).Sustained() {
			lo = r
		} else {
			hi = r
		}
	}
	for lo > 0 && hi > 0 && float64(hi)/float64(lo) > 1+plan.Precision {
		mid := round((lo + hi) / 2)
		if mid <= lo || mid >= hi {
			break
		}
		if try(mid, plan.Short).Sustained() {
			lo = mid
		} else {
			hi = mid
		}
	}

	rate := max(lo, plan.Step)
	var last probe
	for range max(plan.Confirms, 1) {
		last = try(rate, plan.Sustain)
		if last.Sustained() {
			break
		}
		rate = round(rate * 85 / 100)
	}
	return last, tried
}
