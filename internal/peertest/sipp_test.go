package peertest_test

import (
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

// TestSippResultWhileRunning: Result reports sipp's counters while it
// still runs (the soak follows its load generators with it, minute by
// minute), not only after Wait or Stop.
func TestSippResultWhileRunning(t *testing.T) {
	t.Parallel()
	const calls = 1000 // 20 s at 50/s: far more than the test waits for
	uas := peertest.StartSipp(t, peertest.SippOptions{
		Scenario: peertest.Scenario(t, "uas_answer"), LocalIP: peertest.IP(t, 1), LocalPort: 5060,
		Calls: calls, NoMessageTrace: true, Timeout: 60 * time.Second,
	})
	defer uas.Stop()
	uac := peertest.StartSipp(t, peertest.SippOptions{
		Scenario: peertest.Scenario(t, "uac_call"), Remote: peertest.Addr(t, 1, 5060),
		LocalIP: peertest.IP(t, 2), LocalPort: 5060, Service: "bob",
		Calls: calls, Rate: 50, NoMessageTrace: true, Timeout: 60 * time.Second,
	})
	defer uac.Stop()
	var res *peertest.SippResult
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if res = uac.Result(); res.Successful >= 10 {
			break
		}
	}
	if res.Successful < 10 || res.Successful >= calls || res.Failed != 0 {
		t.Fatalf("while running: %d successful, %d failed calls; want 10 to %d successful, none failed (stats %v)",
			res.Successful, res.Failed, calls-1, res.Stats)
	}
}
