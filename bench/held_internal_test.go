package bench

import (
	"strconv"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

// TestHeldOnSippStats holds the "held" rule to sipp's own statistics
// files, kept from real runs of BenchmarkRegisterRate (-register.stats).
func TestHeldOnSippStats(t *testing.T) {
	for _, tc := range []struct {
		file          string
		target, calls int
		held          bool
		// byElapsed: what the rule before issue 16 said, successful calls
		// over sipp's elapsed time ≥ 95% of the target.
		byElapsed bool
	}{
		// The edge, first registrations, 8 s at 6,800/s: sipp created
		// 6,124–6,760 calls a second (median 6,510 ≥ 6,460) and none
		// failed, but answers to the last calls came up to 1.2 s after it
		// created them, so 54,400 calls over 9.3 s looked like 5,850/s.
		{file: "sipp_stats_edge_first_r6800_held.csv", target: 6800, calls: 54400, held: true, byElapsed: false},
		// The same edge at 8,000/s: sipp kept creating, but 5,994 of
		// 64,000 calls (9.4%) failed.
		{file: "sipp_stats_edge_first_r8000_failed.csv", target: 8000, calls: 64000, held: false, byElapsed: false},
		// The same edge later, at 5,440/s: no call failed, but with
		// 21,499 retransmissions in flight sipp reached its -l and
		// created a median 4,160 calls a second (< 5,168).
		{file: "sipp_stats_edge_first_r5440_held_back.csv", target: 5440, calls: 43520, held: false, byElapsed: false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			rows := peertest.ReadSippStats("testdata/" + tc.file)
			if len(rows) < 3 {
				t.Fatalf("%s: %d rows", tc.file, len(rows))
			}
			res := &peertest.SippResult{Stats: rows[len(rows)-1], Periods: rows}
			res.Successful, res.Failed = atoi(t, res.Stats["SuccessfulCall(C)"]), atoi(t, res.Stats["FailedCall(C)"])
			p := newProbe(tc.target, tc.calls, res)
			if p.Sustained() != tc.held {
				t.Errorf("%v: Sustained() = %v, want %v (rates %v)", p, p.Sustained(), tc.held, p.Rates)
			}
			byElapsed := p.FailedShare() < 0.01 && float64(p.Successful)/p.Elapsed.Seconds() >= 0.95*float64(tc.target)
			if byElapsed != tc.byElapsed {
				t.Errorf("%v: by elapsed time held = %v, want %v", p, byElapsed, tc.byElapsed)
			}
		})
	}
}

// TestRequestRoundTrips pairs each REGISTER's first send with its final
// answer in a real sipp -trace_shortmsg excerpt: three digest
// registrations, six round trips.
func TestRequestRoundTrips(t *testing.T) {
	got, err := requestRoundTrips("testdata/register_auth_shortmsg.log")
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{209 * time.Microsecond, 836 * time.Microsecond, 863 * time.Microsecond,
		1484 * time.Microsecond, 2876 * time.Microsecond, 4141 * time.Microsecond}
	if len(got) != len(want) {
		t.Fatalf("round trips = %v, want %v", got, want)
	}
	for i := range want {
		if d := got[i] - want[i]; d < -time.Microsecond || d > time.Microsecond {
			t.Errorf("round trip %d = %v, want %v", i, got[i], want[i])
		}
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}
