package push_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/fcm"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

func BenchmarkDispatchAPNs(b *testing.B) {
	f := pushtest.NewAPNs(b)
	benchDispatch(b, push.Config{Apps: []push.AppConfig{f.App("ios")}}, func(i int) push.Target {
		return f.Target(f.VoIPToken(i))
	})
}

func BenchmarkDispatchFCM(b *testing.B) {
	f := pushtest.NewFCM(b)
	benchDispatch(b, push.Config{Apps: []push.AppConfig{f.App("android")}}, func(i int) push.Target {
		return f.Target(f.Token(i))
	})
}

// benchDispatch sends call pushes from 8×GOMAXPROCS goroutines through one
// Dispatcher (one HTTP/2 connection per app) and reports throughput and
// dispatch latency percentiles.
func benchDispatch(b *testing.B, cfg push.Config, target func(int) push.Target) {
	d, err := push.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), push.WithFCM(fcm.New))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	targets := make([]push.Target, 1024)
	for i := range targets {
		targets[i] = target(i)
	}
	// Warm up: connection and (FCM) OAuth token.
	if res := d.Send(context.Background(), targets[0], callMsg()); res.Outcome != push.Delivered {
		b.Fatalf("warm-up: %+v", res)
	}
	var (
		mu   sync.Mutex
		lats []time.Duration
		next atomic.Int64
		bad  atomic.Int64
	)
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		local := make([]time.Duration, 0, 1024)
		for pb.Next() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			t0 := time.Now()
			res := d.Send(ctx, targets[next.Add(1)%int64(len(targets))], callMsg())
			local = append(local, time.Since(t0))
			cancel()
			if res.Outcome != push.Delivered {
				bad.Add(1)
			}
		}
		mu.Lock()
		lats = append(lats, local...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if n := bad.Load(); n > 0 {
		b.Fatalf("%d pushes not delivered", n)
	}
	slices.Sort(lats)
	pct := func(p float64) float64 {
		return float64(lats[int(float64(len(lats)-1)*p)].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(lats))/elapsed.Seconds(), "pushes/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
