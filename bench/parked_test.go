package bench

import (
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/store"
)

var (
	flagParked      = flag.String("parked.levels", "100,1000", "parked calls: levels for the in-process dispatch-latency runs")
	flagParkedRSS   = flag.Int("parked.rss", 10000, "parked calls: how many the separate sipwake process holds for RSS per call (0 skips)")
	flagParkedTable = flag.String("parked.table", "", "also write the parked-call tables to this file")
)

// Peer number of the separate process's admin listener (/metrics).
const ipAdmin = 7

// idleAfter is how long after the last REGISTER a process counts as idle:
// long past the 5 s its finished transactions linger in sipgo (and the
// same wait as the figures taken when they lingered 32 s).
const idleAfter = 35 * time.Second

// probeRate and probeCalls: the measuring run on top of the parked calls
// is issue 7's "200 calls/s", 5 s of it.
const probeRate, probeCalls = 200, 1000

type parkedRow struct {
	Level          int
	FillRate       int
	Fill           latencySummary // sipwake histogram while parking Level calls
	Probe          latencySummary // sipwake histogram, 200/s with Level parked
	ProbeFake      latencySummary // INVITE sent → push at the fake, same run
	ParkedAtProbe  float64
	ParkedAfter    float64
	FillTook       time.Duration
	PushesAccepted int
}

// BenchmarkParkedCalls parks calls whose devices never wake (calls.wait
// 100 s) and measures INVITE→push dispatch latency with 100 and 1,000
// calls parked (in-process sipwake, its histogram and the fake's arrival
// times), then the RSS per parked call of sipwake as its own process with
// 10,000 calls parked. Run with -benchtime=1x (bench/run.sh parked).
func BenchmarkParkedCalls(b *testing.B) {
	quietSipgo()
	var rows []parkedRow
	for _, f := range strings.Split(*flagParked, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			continue
		}
		b.Run(fmt.Sprintf("latency-parked-%d", n), func(b *testing.B) { rows = append(rows, measureParked(b, n)) })
	}
	var rss *rssRow
	if *flagParkedRSS > 0 {
		b.Run(fmt.Sprintf("rss-parked-%d", *flagParkedRSS), func(b *testing.B) { r := measureParkedRSS(b, *flagParkedRSS); rss = &r })
	}
	table := renderParked(rows, rss)
	fmt.Print(table)
	if *flagParkedTable != "" {
		if err := os.WriteFile(*flagParkedTable, []byte(table), 0o644); err != nil {
			b.Errorf("write table: %v", err)
		}
	}
}

// waitUntil polls cond every 50 ms for up to d.
func waitUntil(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// parkCallers are the fill caller (users [0, level)) and the probe caller
// (the next probeCalls users); both expect the 480 that comes only after
// calls.wait, so their calls stay parked for the whole measurement.
func parkCallers(b *testing.B, remote string, level int) (fill, probe *caller) {
	keys := map[string]string{"expect": "480"}
	fill = &caller{b: b, remote: remote, scenario: "caller_inf_expect", keys: keys,
		inf: calleeInjection(b, 0, level), port: 7100, limit: func(int) int { return level }}
	probe = &caller{b: b, remote: remote, scenario: "caller_inf_expect", keys: keys,
		inf: calleeInjection(b, level, level+probeCalls), port: 7200, limit: func(int) int { return probeCalls }}
	return fill, probe
}

func fillRate(level int) int { return min(max(level/4, 100), 500) }

func measureParked(b *testing.B, level int) parkedRow {
	b.Helper()
	users := level + probeCalls
	w := newWakeSetup(b, users, 100*time.Second, false)
	sw := startSipwakeInProcess(b, w.cfg)
	pool := startDevicePool(b, peertest.Addr(b, ipDevice, 5070), sw.SIPAddr("udp"), w.fake.Param())
	pool.RegisterAll(b, users, 32, w.fake.VoIPToken)
	reg := sw.Registry()
	parked := func() float64 { return gaugeValue(reg, "sipwake_calls_parked", "") }
	const hist = "sipwake_call_push_latency_seconds"

	row := parkedRow{Level: level, FillRate: fillRate(level)}
	fill, probe := parkCallers(b, w.reg.Addr, level)
	h0 := gatherHistogram(reg, hist)
	start := time.Now()
	fs, _ := fill.start("fill", row.FillRate, level, 150*time.Second)
	defer fs.Stop()
	if !waitUntil(60*time.Second, func() bool { return parked() >= float64(level) }) {
		b.Fatalf("only %.0f of %d calls parked", parked(), level)
	}
	row.FillTook = time.Since(start)
	time.Sleep(time.Second)
	h1 := gatherHistogram(reg, hist)
	row.Fill = h1.minus(h0).summary()
	row.ParkedAtProbe = parked()

	ps, short := probe.start("probe", probeRate, probeCalls, 150*time.Second)
	defer ps.Stop()
	if !waitUntil(30*time.Second, func() bool { return parked() >= float64(level+probeCalls) }) {
		b.Errorf("only %.0f of %d calls parked after the probe", parked(), level+probeCalls)
	}
	time.Sleep(time.Second)
	h2 := gatherHistogram(reg, hist)
	row.Probe = h2.minus(h1).summary()
	row.ParkedAfter = parked()
	if sent, err := inviteSendTimes(short); err == nil {
		row.ProbeFake = summarize(lags(sent, w.pushes.snapshot()))
	}
	row.PushesAccepted = len(w.fake.Accepted())
	b.Logf("parked %d: fill %v; probe at 200/s: sipwake %v; fake %v", level, row.Fill, row.Probe, row.ProbeFake)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(row.Probe.P99.Seconds()*1000, "p99-ms")
	return row
}

// rssRow is the separate process holding many parked calls.
type rssRow struct {
	Calls                         int
	RegisteredRSS                 int64   // KiB, 3 s after the last REGISTER
	RegisteredHeap                float64 // bytes, same moment
	IdleRSS, ParkedRSS, ParkedHWM int64   // KiB
	IdleHeap, ParkedHeap          float64
	IdleStack, ParkedStack        float64 // goroutine stacks, bytes
	IdleGoroutines, Goroutines    float64
	Parked                        float64
	FillTook                      time.Duration
	Records                       float64
	Latency                       latencySummary
}

// startSipwakeProcessWith is startSipwakeProcess with a given fake, data
// dir, sealing key and extra SIPWAKE_* settings (which win).
func startSipwakeProcessWith(b *testing.B, upstream string, fake *pushtest.APNs, dataDir string, key []byte, extra map[string]string) *sipwakeProcess {
	b.Helper()
	return startProcessNode(b, sipwakeBinary(b), upstream, fake, dataDir, key, extra)
}

// startProcessNode runs bin as a sipwake process configured by SIPWAKE_*
// variables; its SIP address is what SIPWAKE_SIP_LISTEN_UDP ends up as
// (extra may move it from ipSipwake), and extra may hold other variables
// for bin (the soak's node, bench_test re-executed, reads one).
func startProcessNode(b *testing.B, bin, upstream string, fake *pushtest.APNs, dataDir string, key []byte, extra map[string]string) *sipwakeProcess {
	b.Helper()
	app := fake.App("ios").APNs
	apps, err := json.Marshal([]map[string]any{{
		"name": "ios", "provider": "apns",
		"apns": map[string]string{
			"bundle_id": app.BundleID, "team_id": app.TeamID, "key_id": app.KeyID,
			"key_file": app.KeyFile, "endpoint": app.Endpoint, "ca_file": app.CAFile,
		},
	}})
	if err != nil {
		b.Fatal(err)
	}
	p := &sipwakeProcess{
		Addr:    peertest.Addr(b, ipSipwake, 5060),
		Param:   fake.Param(),
		dataDir: dataDir,
		key:     key,
		logPath: filepath.Join(filepath.Dir(dataDir), "sipwake.log"),
		done:    make(chan struct{}),
		bin:     bin,
	}
	set := map[string]string{
		"SIPWAKE_SIP_LISTEN_UDP":    p.Addr,
		"SIPWAKE_SIP_LISTEN_TCP":    p.Addr,
		"SIPWAKE_SIP_UPSTREAM":      "sip:" + upstream,
		"SIPWAKE_STORE_DATA_DIR":    p.dataDir,
		"SIPWAKE_SEAL_KEY":          base64.StdEncoding.EncodeToString(p.key),
		"SIPWAKE_LOG_LEVEL":         "warn",
		"SIPWAKE_PUSH_APPS":         string(apps),
		"SIPWAKE_SIP_REGISTER_RATE": "0",
	}
	if *flagMemLimit != "" {
		set["SIPWAKE_RUNTIME_MEMORY_LIMIT"] = *flagMemLimit
	}
	if *flagHeapFloor != "" {
		set["SIPWAKE_RUNTIME_HEAP_FLOOR"] = *flagHeapFloor
	}
	for k, v := range extra {
		set[k] = v
	}
	p.Addr = set["SIPWAKE_SIP_LISTEN_UDP"]
	for k, v := range set {
		p.env = append(p.env, k+"="+v)
	}
	for _, kv := range os.Environ() {
		// The process runs on its own configuration, not the harness':
		// an unknown SIPWAKE_ key would stop it, and GOGC/GOMEMLIMIT would
		// override runtime.*.
		if !strings.HasPrefix(kv, "SIPWAKE_") && !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			p.env = append(p.env, kv)
		}
	}
	p.spawn(b)
	return p
}

func measureParkedRSS(b *testing.B, n int) rssRow {
	b.Helper()
	reg := startRegistrarN(b, n)
	fake := pushtest.NewAPNs(b)
	dir := b.TempDir()
	admin := peertest.Addr(b, ipAdmin, 9060)
	p := startSipwakeProcessWith(b, reg.Addr, fake, filepath.Join(dir, "data"), store.NewKey(), map[string]string{
		"SIPWAKE_CALLS_WAIT":   "100s",
		"SIPWAKE_ADMIN_LISTEN": admin,
	})
	metrics := scraped("http://" + admin + "/metrics")
	gauge := func(name string) float64 { return gaugeValue(metrics, name, "") }
	pool := startDevicePool(b, peertest.Addr(b, ipDevice, 5070), p.Addr, fake.Param())
	took := pool.RegisterAll(b, n, 32, fake.VoIPToken)
	b.Logf("registered %d sleeping devices through the sipwake process in %v", n, took.Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	row := rssRow{Calls: n}
	row.RegisteredRSS, _ = p.Memory(b)
	row.RegisteredHeap = gauge("go_memstats_heap_inuse_bytes")
	// Idle is well after the REGISTERs' finished transactions stopped
	// lingering in sipgo.
	time.Sleep(idleAfter)
	row.IdleRSS, _ = p.Memory(b)
	if _, err := metrics.Gather(); err != nil {
		b.Fatalf("scrape: %v", err)
	}
	row.IdleHeap, row.IdleStack = gauge("go_memstats_heap_inuse_bytes"), gauge("go_memstats_stack_inuse_bytes")
	row.IdleGoroutines, row.Records = gauge("go_goroutines"), gauge("sipwake_store_records")

	fill, _ := parkCallers(b, reg.Addr, n)
	start := time.Now()
	fs, _ := fill.start("fill", 500, n, 170*time.Second)
	defer fs.Stop()
	ok := waitUntil(90*time.Second, func() bool { return gauge("sipwake_calls_parked") >= float64(n) })
	row.FillTook = time.Since(start)
	if !ok {
		b.Errorf("not all %d calls parked within 90 s", n)
	}
	time.Sleep(3 * time.Second)
	row.ParkedRSS, row.ParkedHWM = p.Memory(b)
	row.Parked, row.ParkedHeap, row.ParkedStack = gauge("sipwake_calls_parked"), gauge("go_memstats_heap_inuse_bytes"), gauge("go_memstats_stack_inuse_bytes")
	row.Goroutines = gauge("go_goroutines")
	row.Latency = gatherHistogram(metrics, "sipwake_call_push_latency_seconds").summary()
	b.Logf("%+v", row)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(row.ParkedRSS-row.IdleRSS)/float64(n), "KiB/parked-call")
	return row
}

func renderParked(rows []parkedRow, rss *rssRow) string {
	var s strings.Builder
	if len(rows) > 0 {
		fmt.Fprintf(&s, "\nINVITE→push dispatch latency with calls parked (in-process sipwake, calls.wait 100 s, devices never wake) (%s)\n", time.Now().Format(time.DateOnly))
		fmt.Fprintf(&s, "%-8s | %-78s | %-78s | %s\n", "parked", "filling: sipwake histogram", "then 200/s × 5 s on top: sipwake histogram", "same 1,000 calls: caller INVITE sent → push at the fake")
		for _, r := range rows {
			fmt.Fprintf(&s, "%-8d | %-78s | %-78s | %s\n", r.Level,
				fmt.Sprintf("-r %d, %v: %v", r.FillRate, r.FillTook.Round(100*time.Millisecond), r.Fill), r.Probe, r.ProbeFake)
		}
	}
	if rss != nil {
		mib := func(kib int64) string { return fmt.Sprintf("%.1f MiB", float64(kib)/1024) }
		fmt.Fprintf(&s, "\nRSS per parked call, sipwake as its own process (cmd/sipwake, SIPWAKE_* env), %d devices registered\n", rss.Calls)
		fmt.Fprintf(&s, "  3 s after the last REGISTER:      RSS %s, Go heap in use %.1f MiB\n", mib(rss.RegisteredRSS), rss.RegisteredHeap/(1<<20))
		fmt.Fprintf(&s, "  idle (%v later, no call):         RSS %s, Go heap in use %.1f MiB, stacks %.1f MiB, %0.f goroutines, %.0f records\n",
			idleAfter, mib(rss.IdleRSS), rss.IdleHeap/(1<<20), rss.IdleStack/(1<<20), rss.IdleGoroutines, rss.Records)
		fmt.Fprintf(&s, "  %.0f calls parked (filled in %v): RSS %s (peak %s), Go heap in use %.1f MiB, stacks %.1f MiB, %.0f goroutines\n",
			rss.Parked, rss.FillTook.Round(100*time.Millisecond), mib(rss.ParkedRSS), mib(rss.ParkedHWM), rss.ParkedHeap/(1<<20), rss.ParkedStack/(1<<20), rss.Goroutines)
		fmt.Fprintf(&s, "  per parked call: %.1f KiB RSS, %.1f KiB Go heap, %.1f KiB stack, %.1f goroutines\n",
			float64(rss.ParkedRSS-rss.IdleRSS)/float64(rss.Calls), (rss.ParkedHeap-rss.IdleHeap)/1024/float64(rss.Calls),
			(rss.ParkedStack-rss.IdleStack)/1024/float64(rss.Calls), (rss.Goroutines-rss.IdleGoroutines)/float64(rss.Calls))
		fmt.Fprintf(&s, "  dispatch latency while filling (process /metrics): %v\n", rss.Latency)
	}
	return s.String()
}
