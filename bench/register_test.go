// Package bench is sipwake's load harness: real Kamailio, sipp and sipwake
// on 127.x.y.n, driven at rising rates until they stop keeping up. It holds
// only _test.go files so `go test ./...` and `go vet ./...` stay fast; the
// load runs are benchmarks, started by bench/run.sh. It measures; it does not
// assert timings and it changes nothing outside bench/.
package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sipgo "github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/admin"
	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	sipwire "github.com/sipwake/sipwake/internal/sip"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

var (
	flagSipwakeBin = flag.String("sipwake.bin", "", "prebuilt sipwake binary for the separate-process set-up (default: go build ./cmd/sipwake)")
	flagMemLimit   = flag.String("sipwake.memory_limit", "", "runtime.memory_limit of the separate sipwake process (e.g. 192MiB; default: none)")
	flagHeapFloor  = flag.String("sipwake.heap_floor", "", "runtime.heap_floor of the separate sipwake process (e.g. 0 for off; default: sipwake's, 64MiB)")
	flagRate       = flag.Int("register.rate", 0, "skip the search: one sustained run at this REGISTER/s (for profiling)")
	flagTable      = flag.String("register.table", "", "also write the result table to this file")
	flagProcCPU    = flag.String("sipwake.cpuprofile", "", "with -register.rate: write the separate sipwake process' CPU profile of the run (from its /admin/pprof/profile) to this file")
	flagUsers      = flag.Int("register.users", 5000, "distinct users (AORs) registered, in turn")
)

const (
	domain   = "example.test"
	password = "bench-Pa55"
	// Every Kamailio gets issue 7's memory: with the default 64 MB its
	// transaction table fills near 2,000 REGISTER/s and it becomes the limit.
	sharedMemMB, pkgMemMB = 512, 16
	// kamailioChildren is every benchmarked Kamailio's UDP and TCP workers.
	kamailioChildren = 4
)

// sippBuffers gives every load-generating sipp a 4 MiB socket buffer. One
// sipp socket stands for thousands of phones, and sipp's own 64 KiB (its
// -buff_size default) overflows whenever sipp is descheduled for a few
// milliseconds at these rates: the kernel drops the answers
// (/proc/net/udp's drops column, on sipp's port), each costs a 500 ms
// retransmission, and the run measures sipp's buffer instead of the peer.
var sippBuffers = []string{"-buff_size", "4194304"}

// Peer numbers for peertest.IP: one 127.x.y.0/24 per set-up.
const (
	ipRegistrar = 1
	ipSipwake   = 2
	ipEdge      = 3
	ipSipp      = 4
)

// setupResult is one row of the table.
type setupResult struct {
	Name, Path string
	Best       probe
	Tried      []probe
	// Set for the sipwake set-ups.
	StoreCount int
	RSSKiB     int64 // VmRSS after the run (separate process only)
	HWMKiB     int64 // VmHWM, the peak
	// Wedged: after its first overload, sipwake answered none of a
	// trickle of REGISTERs. Restarts: how often the harness restarted it
	// after an overloaded probe, so the next probe measured capacity
	// rather than the wedge.
	Wedged   bool
	Restarts int
}

// BenchmarkRegisterRate finds, for each set-up, the highest REGISTER/s (the
// full REGISTER→401→REGISTER→200 exchange of register_auth.xml over UDP)
// sustained for 10 s with under 1% failed calls. Each sub-benchmark does its
// search once whatever b.N is: run it with -benchtime=1x (bench/run.sh).
func BenchmarkRegisterRate(b *testing.B) {
	// What cmd/sipwake's main does once: sipgo's package logger through the
	// same redaction, and quiet below warn.
	sipgo.SetDefaultLogger(sipmsg.RedactedLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))

	var (
		mu   sync.Mutex
		rows []setupResult
	)
	add := func(r setupResult) {
		mu.Lock()
		defer mu.Unlock()
		rows = append(rows, r)
	}
	b.Run("a-kamailio", func(b *testing.B) {
		reg := startRegistrar(b)
		add(measure(b, "a) Kamailio registrar", "sipp → Kamailio", reg.Addr))
	})
	b.Run("b-sipwake", func(b *testing.B) {
		reg := startRegistrar(b)
		cfg, fake := sipwakeConfig(b, reg.Addr)
		sw := startSipwakeInProcess(b, cfg)
		dumped := false
		restart := func(wedged bool) {
			if wedged && !dumped {
				dumpGoroutines(b)
				dumped = true
			}
			stopInProcess(b, sw)
			sw = startSipwakeInProcess(b, cfg)
		}
		r := measureWith(b, "b) sipwake in-process", "sipp → sipwake (in harness) → Kamailio", sw.SIPAddr("udp"), fake.Param(), restart, diagnoseRegistrar(b, reg))
		n, err := sw.Store().Count(context.Background())
		if err != nil {
			b.Fatalf("store count: %v", err)
		}
		r.StoreCount = n
		checkCount(b, r)
		add(r)
	})
	b.Run("b-sipwake-process", func(b *testing.B) {
		reg := startRegistrar(b)
		adminAddr := peertest.Addr(b, ipAdmin, 9060)
		p := startSipwakeProcessWith(b, reg.Addr, pushtest.NewAPNs(b), filepath.Join(b.TempDir(), "data"), store.NewKey(), map[string]string{
			"SIPWAKE_ADMIN_LISTEN":       adminAddr,
			"SIPWAKE_ADMIN_TOKEN_SHA256": admin.HashToken(benchAdminToken),
		})
		restart := func(bool) { p = p.restart(b) }
		profiled := profileProcess(b, adminAddr)
		r := measureWith(b, "b) sipwake process", "sipp → sipwake (own process) → Kamailio", p.Addr, p.Param, restart, diagnoseRegistrar(b, reg))
		profiled()
		r.RSSKiB, r.HWMKiB = p.Memory(b)
		r.StoreCount = p.StopAndCount(b)
		checkCount(b, r)
		add(r)
	})
	b.Run("c-edge", func(b *testing.B) {
		reg := startRegistrar(b)
		edge := peertest.StartKamailio(b, peertest.KamailioOptions{
			Addr: peertest.Addr(b, ipEdge, 5060), Domain: domain, EdgeUpstream: reg.Addr,
			SharedMemMB: sharedMemMB, PkgMemMB: pkgMemMB, Children: kamailioChildren,
		})
		add(measure(b, "c) Kamailio edge", "sipp → Kamailio (add_path, t_relay) → Kamailio", edge.Addr))
	})

	table := renderTable(rows)
	fmt.Print(table)
	if *flagTable != "" {
		if err := os.WriteFile(*flagTable, []byte(table), 0o644); err != nil {
			b.Errorf("write table: %v", err)
		}
	}
}

func userName(i int) string { return fmt.Sprintf("u%05d", i) }

// startRegistrar starts Kamailio as the registrar and loads the users over
// its control socket: peertest writes them into the config, and at
// ~3.4 KB of pkg memory per line 5,000 users do not fit in -M 16.
func startRegistrar(b *testing.B) *peertest.Kamailio {
	b.Helper()
	k := peertest.StartKamailio(b, peertest.KamailioOptions{
		Addr: peertest.Addr(b, ipRegistrar, 5060), Domain: domain,
		// One user in the config: the template's event_route must not be empty.
		Users:       map[string]string{userName(0): password},
		SharedMemMB: sharedMemMB, PkgMemMB: pkgMemMB, Children: kamailioChildren,
	})
	var cmds strings.Builder
	for i := range *flagUsers {
		fmt.Fprintf(&cmds, "htable.sets users %s %s\n", userName(i), password)
	}
	kamcmd, err := exec.LookPath("kamcmd")
	if err != nil {
		b.Fatal(err) // StartKamailio has skipped already if it were missing
	}
	// kamcmd reads commands from stdin when given none: one connection
	// for all users instead of one process each.
	cmd := exec.Command(kamcmd, "-s", k.CtlSocket)
	cmd.Stdin = strings.NewReader(cmds.String())
	if out, err := cmd.CombinedOutput(); err != nil || strings.Count(string(out), "Key set") != *flagUsers {
		b.Fatalf("load %d users into Kamailio: %v\n%.2000s", *flagUsers, err, out)
	}
	return k
}

// sipwakeConfig is the in-process sipwake's config: in front of upstream,
// records in a temp dir, one APNs app. The fake APNs only makes the push
// config valid: a REGISTER sends no push.
func sipwakeConfig(b *testing.B, upstream string) (config.Config, *pushtest.APNs) {
	b.Helper()
	fake := pushtest.NewAPNs(b)
	cfg := config.Default()
	addr := peertest.Addr(b, ipSipwake, 5060)
	cfg.SIP.Listen = sipwire.Listen{UDP: addr, TCP: addr}
	cfg.SIP.Upstream = "sip:" + upstream
	cfg.Store.DataDir = b.TempDir()
	cfg.Log.Level = "warn"
	cfg.Push.Apps = []push.AppConfig{fake.App("ios")}
	// sipp is one source address standing for thousands of phones: the
	// per-source REGISTER limit would measure itself, not sipwake.
	cfg.SIP.RegisterRate = 0
	return cfg, fake
}

// startSipwakeInProcess runs sipwake inside the benchmark binary, so a
// -cpuprofile of the benchmark profiles it.
func startSipwakeInProcess(b *testing.B, cfg config.Config) *app.App {
	b.Helper()
	logf, err := os.OpenFile(filepath.Join(cfg.Store.DataDir, "sipwake.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = logf.Close() })
	a, err := app.New(cfg, slog.New(slog.NewTextHandler(logf, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		b.Fatalf("sipwake: %v", err)
	}
	if err := a.Start(context.Background()); err != nil {
		b.Fatalf("sipwake start: %v", err)
	}
	b.Cleanup(func() { stopInProcess(b, a) })
	return a
}

func stopInProcess(b *testing.B, a *app.App) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Stop(ctx); err != nil {
		b.Errorf("sipwake stop: %v", err)
	}
}

// diagnoseRegistrar returns a check, for when sipwake answers nothing,
// of whether the registrar behind it still does: a trickle of REGISTERs
// straight to it, and its tm and shared-memory counters.
func diagnoseRegistrar(b *testing.B, reg *peertest.Kamailio) func() {
	return func() {
		res, err := peertest.RunSipp(b, peertest.SippOptions{
			Name: "direct", Scenario: peertest.Scenario(b, "register_auth"), Remote: reg.Addr,
			LocalIP: peertest.IP(b, ipSipp), LocalPort: 5990, Calls: 20, Rate: 20,
			Injection: peertest.RegisterInjection(peertest.SippUser{User: userName(1), Domain: domain,
				Password: password, Provider: "apns", PRID: "x", Param: "y"}),
			Keys: map[string]string{"expires": "3600"}, NoMessageTrace: true, Timeout: 10 * time.Second,
		})
		b.Logf("diagnose: 20 REGISTERs straight to Kamailio: %d ok, %d failed (%v)", res.Successful, res.Failed, err)
		for _, rpc := range []string{"tm.stats", "core.shmmem"} {
			out, err := reg.RPC(context.Background(), rpc)
			b.Logf("diagnose: kamcmd %s: %v\n%s", rpc, err, out)
		}
		log := reg.Log()
		b.Logf("diagnose: Kamailio log tail:\n%s", log[max(0, len(log)-3000):])
	}
}

// dumpGoroutines writes every goroutine's stack (the harness's and the
// in-process sipwake's) to a file that outlives the run, for a wedge.
func dumpGoroutines(b *testing.B) {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("sipwake-bench-goroutines-%d.txt", os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		b.Logf("goroutine dump: %v", err)
		return
	}
	defer f.Close()
	_ = pprof.Lookup("goroutine").WriteTo(f, 1)
	b.Logf("goroutines of the wedged in-process sipwake: %s", path)
}

func measure(b *testing.B, name, path, remote string) setupResult {
	b.Helper()
	return measureWith(b, name, path, remote, "TEAM123456.org.sipwake.test.voip", nil, nil)
}

// measureWith searches for the highest sustained rate against remote with
// devices whose pn-param is param. After a probe the set-up did not
// sustain, a trickle of REGISTERs checks whether it still answers (for
// the first three such probes), diagnose runs if it does not, and a
// non-nil restart is called, told whether the trickle went unanswered.
func measureWith(b *testing.B, name, path, remote, param string, restart func(wedged bool), diagnose func()) setupResult {
	b.Helper()
	n := *flagUsers
	devs := make([]peertest.SippUser, n)
	for i := range devs {
		devs[i] = peertest.SippUser{User: userName(i), Domain: domain, Password: password,
			Provider: "apns", PRID: pushtest.APNsToken(i), Param: param}
	}
	injection := peertest.RegisterInjection(devs...)
	scenario := peertest.Scenario(b, "register_auth")
	localIP := peertest.IP(b, ipSipp)

	port := 6000
	sipp := func(rate int, d time.Duration) probe {
		port++ // a fresh port per run: late answers to the last run are not this run's
		calls := max(rate*int(d/time.Second), rate*int(d/time.Millisecond)/1000)
		cpu := startCPU()
		res, err := peertest.RunSipp(b, peertest.SippOptions{
			Name: fmt.Sprintf("r%d", rate), Scenario: scenario, Remote: remote,
			LocalIP: localIP, LocalPort: port, Transport: "u1",
			Calls: calls, Rate: float64(rate),
			// Half a second of calls in flight: a peer slower than that
			// holds sipp below its target instead of drowning in
			// retransmissions, and the run counts as not sustained.
			Limit:     max(rate/2, 50),
			Injection: injection, Keys: map[string]string{"expires": "3600"},
			NoMessageTrace: true, Timeout: d + 8*time.Second,
			Args: append([]string{"-recv_timeout", "5000"}, sippBuffers...),
		})
		if res == nil {
			b.Fatalf("sipp: %v", err)
		}
		p := probe{Target: rate, Calls: calls, Successful: res.Successful, Failed: res.Failed,
			Elapsed: sippElapsed(res.Stats), CPU: cpu.stop(res.CPU)}
		b.Logf("%s: %v", name, p)
		time.Sleep(time.Second) // let retransmissions and tm timers drain
		return p
	}
	res := setupResult{Name: name, Path: path}
	run := func(rate int, d time.Duration) probe {
		p := sipp(rate, d)
		if p.Sustained() || restart == nil {
			return p
		}
		wedged := false
		if res.Restarts < 3 {
			trickle := sipp(20, time.Second)
			res.Wedged = res.Wedged || trickle.Successful == 0
			b.Logf("%s: after overload, a trickle of 20/s: %v", name, trickle)
			wedged = trickle.Successful == 0
			if wedged && diagnose != nil {
				diagnose()
			}
		}
		restart(wedged)
		res.Restarts++
		return p
	}

	var best probe
	var tried []probe
	if *flagRate > 0 {
		best = run(*flagRate, defaultPlan.Sustain)
		tried = []probe{best}
	} else {
		best, tried = findMaxRate(defaultPlan, run)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(best.Achieved(), "REGISTER/s")
	b.ReportMetric(100*best.FailedShare(), "%failed")
	res.Best, res.Tried = best, tried
	return res
}

// sippElapsed is the run's length from sipp's stats: CurrentTime of the
// final dump minus StartTime, each "date\ttime\tunix.micro". (Its
// ElapsedTime(C) column has whole seconds only.)
func sippElapsed(stats map[string]string) time.Duration {
	unix := func(col string) (float64, bool) {
		f := strings.Split(stats[col], "\t")
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		return v, err == nil
	}
	start, ok1 := unix("StartTime")
	end, ok2 := unix("CurrentTime")
	if !ok1 || !ok2 || end < start {
		return 0
	}
	return time.Duration((end - start) * float64(time.Second))
}

// checkCount holds sipwake to one record per device registered: every user
// that completed a registration is one AOR with one device.
func checkCount(b *testing.B, r setupResult) {
	b.Helper()
	want := 0
	for _, p := range r.Tried {
		want = max(want, min(p.Successful, *flagUsers))
	}
	if r.StoreCount < want || r.StoreCount > *flagUsers {
		b.Errorf("%s: store holds %d records, want %d..%d", r.Name, r.StoreCount, want, *flagUsers)
	}
}

func renderTable(rows []setupResult) string {
	var base float64
	for _, r := range rows {
		if strings.HasPrefix(r.Name, "a)") {
			base = r.Best.Achieved()
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, "\nREGISTER rate, register_auth.xml over UDP, %d users, 10 s sustained, <1%% failed (%s)\n", *flagUsers, time.Now().Format(time.DateOnly))
	fmt.Fprintf(&s, "%-24s %-46s %11s %8s %7s  %s\n", "set-up", "path", "REGISTER/s", "failed", "vs a)", "notes")
	for _, r := range rows {
		ratio := "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", r.Best.Achieved()/base)
		}
		var notes []string
		if !r.Best.Sustained() {
			notes = append(notes, "NOT SUSTAINED at any rate tried")
		}
		notes = append(notes, fmt.Sprintf("-r %d", r.Best.Target))
		if r.StoreCount > 0 {
			notes = append(notes, fmt.Sprintf("durable writes %.0f/s, store count %d", r.Best.Achieved(), r.StoreCount))
		}
		if r.Wedged {
			notes = append(notes, fmt.Sprintf("WEDGED after its first overload (answered nothing at 20/s); restarted %d times", r.Restarts))
		} else if r.Restarts > 0 {
			notes = append(notes, fmt.Sprintf("restarted %d times after overload", r.Restarts))
		}
		if r.RSSKiB > 0 {
			notes = append(notes, fmt.Sprintf("RSS %.1f MiB (peak %.1f)", float64(r.RSSKiB)/1024, float64(r.HWMKiB)/1024))
		}
		fmt.Fprintf(&s, "%-24s %-46s %11.0f %7.2f%% %7s  %s\n", r.Name, r.Path, r.Best.Achieved(),
			100*r.Best.FailedShare(), ratio, strings.Join(notes, "; "))
	}
	s.WriteString("\nCPU per registration in the run above (user+system; the harness row holds an in-process sipwake):\n")
	for _, r := range rows {
		fmt.Fprintf(&s, "%-24s %s\n", r.Name, r.Best.CPU.perCall(r.Best.Successful))
	}
	return s.String()
}

// benchAdminToken is the separate process' admin bearer token.
const benchAdminToken = "sipwake-bench"

// profileProcess, with -sipwake.cpuprofile and -register.rate, fetches the
// separate process' CPU profile over the sustained run (from a second in,
// for the run's length less two seconds) into that file; the returned func
// waits for it. The process is what an operator runs: the in-process
// profile (run.sh profile) has the harness in it too.
func profileProcess(b *testing.B, admin string) func() {
	if *flagProcCPU == "" || *flagRate <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(time.Second)
		secs := int(defaultPlan.Sustain/time.Second) - 2
		req, err := http.NewRequest("GET", fmt.Sprintf("http://%s/admin/pprof/profile?seconds=%d", admin, secs), nil)
		if err != nil {
			b.Errorf("cpu profile: %v", err)
			return
		}
		req.Header.Set("Authorization", "Bearer "+benchAdminToken)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Errorf("cpu profile: %v", err)
			return
		}
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		if err != nil || res.StatusCode != http.StatusOK {
			b.Errorf("cpu profile: %d %v", res.StatusCode, err)
			return
		}
		if err := os.WriteFile(*flagProcCPU, body, 0o644); err != nil {
			b.Errorf("cpu profile: %v", err)
		}
	}()
	return func() { <-done }
}
