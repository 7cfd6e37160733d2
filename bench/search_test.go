package bench

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

// probe is one sipp run at a fixed target rate.
type probe struct {
	Target     int           // sipp -r, calls/s
	Calls      int           // sipp -m
	Successful int           // calls that reached their end (a REGISTER's 200)
	Failed     int           // sipp's failed calls
	Elapsed    time.Duration // sipp's own elapsed time for the run
	// Rates is sipp's call creation rate (its CallRate(P)) in each -fd 1
	// period that ended with calls still to create: what it achieved
	// while it was asked for Target.
	Rates []float64
	// Retransmissions is sipp's count of requests it had to resend.
	Retransmissions int
	// RTT is the run's round trips when the scenario times them (each
	// REGISTER's first send to its final answer, from sipp -trace_rtt).
	RTT latencySummary
	CPU cpuUse // what each hop spent on the run
}

// newProbe reads a finished sipp run of calls at -r target.
func newProbe(target, calls int, res *peertest.SippResult) probe {
	p := probe{Target: target, Calls: calls, Successful: res.Successful, Failed: res.Failed,
		Elapsed: sippElapsed(res.Stats), Rates: creationRates(res.Periods, calls)}
	p.Retransmissions, _ = strconv.Atoi(res.Stats["Retransmissions(C)"])
	return p
}

// creationRates picks sipp's per-period call creation rate (CallRate(P))
// from its -trace_stat rows while it still had calls to create: the
// first row (sipp's start, an empty period) and the period in which it
// created its last call (cut short) say nothing of the rate it could
// keep, and neither do the periods after it, when sipp only waits for
// answers. A run that created everything in its first period keeps that
// period.
func creationRates(rows []map[string]string, calls int) []float64 {
	var out, last []float64
	for _, r := range rows {
		period := sippTime(r["CurrentTime"]) - sippTime(r["LastResetTime"])
		rate, err := strconv.ParseFloat(r["CallRate(P)"], 64)
		if err != nil || period < 0.5 {
			continue
		}
		created, _ := strconv.Atoi(r["OutgoingCall(C)"])
		if created >= calls {
			if len(out) == 0 && last == nil {
				last = []float64{rate}
			}
			break
		}
		out = append(out, rate)
	}
	if len(out) == 0 {
		return last
	}
	return out
}

// sippElapsed is the run's length from sipp's stats: CurrentTime of the
// final dump minus StartTime. (Its ElapsedTime(C) column has whole seconds
// only.)
func sippElapsed(stats map[string]string) time.Duration {
	start, end := sippTime(stats["StartTime"]), sippTime(stats["CurrentTime"])
	if start == 0 || end < start {
		return 0
	}
	return time.Duration((end - start) * float64(time.Second))
}

// sippTime reads one of sipp's time columns, "date\ttime\tunix.micro", as
// Unix seconds (0 if it cannot).
func sippTime(col string) float64 {
	v, err := strconv.ParseFloat(col[strings.LastIndexByte(col, '\t')+1:], 64)
	if err != nil {
		return 0
	}
	return v
}

// Achieved is the median of sipp's per-second call creation rate over the
// run (0 with no period to judge).
func (p probe) Achieved() float64 {
	if len(p.Rates) == 0 {
		return 0
	}
	r := slices.Clone(p.Rates)
	slices.Sort(r)
	n := len(r)
	if n%2 == 1 {
		return r[n/2]
	}
	return (r[n/2-1] + r[n/2]) / 2
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

// Sustained reports whether the set-up held the rate: under 1% of the
// calls failed and the median of sipp's per-second call creation reached
// 95% of the rate asked. sipp creates calls only while fewer than -l are
// in flight, so a slow peer holds that rate down; a late retransmission
// at the end of the run, which stretches sipp's elapsed time, does not.
func (p probe) Sustained() bool {
	return p.FailedShare() < 0.01 && p.Achieved() >= 0.95*float64(p.Target)
}

func (p probe) String() string {
	return fmt.Sprintf("-r %d: %d/%d ok, %d failed, created %.0f/s (median of %d s), %d retransmissions, in %v",
		p.Target, p.Successful, p.Calls, p.Failed, p.Achieved(), len(p.Rates), p.Retransmissions, p.Elapsed.Round(time.Millisecond))
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

// defaultPlan keeps one set-up's search to about a minute on a 2-core VM,
// so that three flows of three set-ups fit in 15 minutes: a doubling ramp
// from 1,000/s and bisection to within 15% with 4 s runs (three whole
// seconds of call creation to take the median of), then 8 s at the result,
// stepping down 15% up to three times while that does not hold (a set-up
// near collapse holds 4 s where it cannot hold 8: with two confirmations
// the Kamailio edge once ended first registrations with no held rate).
var defaultPlan = searchPlan{
	Start: 1000, Max: 16000, Step: 50, Precision: 0.15,
	Short: 4 * time.Second, Sustain: 8 * time.Second, Confirms: 4,
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
