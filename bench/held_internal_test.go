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
	}{
		// @@HELD@@
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
