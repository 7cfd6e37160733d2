package bench

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

var flagHeapDir = flag.String("heap.dir", os.TempDir(), "BenchmarkParkedHeap: where heap-idle.pprof and heap-parked.pprof go")

// BenchmarkParkedHeap is BenchmarkParkedCalls's RSS run in-process, for
// heap profiles: just after -parked.rss devices registered
// (heap-registered.pprof), 35 s later (heap-idle.pprof) and with as many
// calls parked (heap-parked.pprof). The harness's own
// device pool and fake share the heap; pprof tells them apart by function.
// Read with: go tool pprof -sample_index=inuse_space -top FILE
func BenchmarkParkedHeap(b *testing.B) {
	quietSipgo()
	n := *flagParkedRSS
	w := newWakeSetup(b, n, 100*time.Second, false)
	sw := startSipwakeInProcess(b, w.cfg)
	pool := startDevicePool(b, peertest.Addr(b, ipDevice, 5070), sw.SIPAddr("udp"), w.fake.Param())
	pool.RegisterAll(b, n, 32, w.fake.VoIPToken)
	time.Sleep(2 * time.Second)
	writeHeap(b, "heap-registered.pprof")
	// sipgo keeps a completed non-INVITE server transaction for Timer J
	// (64×T1 = 32 s over UDP) to absorb retransmissions: idle is after it.
	time.Sleep(idleAfter)
	writeHeap(b, "heap-idle.pprof")
	fill, _ := parkCallers(b, w.reg.Addr, n)
	fs, _ := fill.start("fill", 500, n, 170*time.Second)
	defer fs.Stop()
	reg := sw.Registry()
	if !waitUntil(90*time.Second, func() bool { return gaugeValue(reg, "sipwake_calls_parked", "") >= float64(n) }) {
		b.Errorf("only %.0f calls parked", gaugeValue(reg, "sipwake_calls_parked", ""))
	}
	time.Sleep(2 * time.Second)
	writeHeap(b, "heap-parked.pprof")
	b.ReportMetric(0, "ns/op")
}

func writeHeap(b *testing.B, name string) {
	runtime.GC()
	path := filepath.Join(*flagHeapDir, name)
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close()); err != nil {
		b.Fatal(err)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.Logf("%s: heap in use %.1f MiB, %d goroutines", path, float64(ms.HeapInuse)/(1<<20), runtime.NumGoroutine())
}
