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
	"slices"
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
	flagRuns       = flag.Int("register.runs", 1, "with -register.rate: this many sustained runs in a row, each logged, the last one reported and profiled (first registrations: the store grows by each run's)")
	flagTable      = flag.String("register.table", "", "also write the result table to this file")
	flagProcCPU    = flag.String("sipwake.cpuprofile", "", "with -register.rate: write the separate sipwake process' CPU profile of the run (from its /admin/pprof/profile) to this file")
	flagCold       = flag.Bool("register.cold", false, "with -register.rate: restart sipwake on its data just before the reported run, which then meets a cold process, as load does after a restart")
	flagUsers      = flag.Int("register.users", 5000, "distinct users (AORs) registered, in turn")
	flagStatsDir   = flag.String("register.stats", "", "copy every REGISTER run's sipp -trace_stat file (what the held rule judged), -trace_err file (when calls failed) and short-message trace into this directory")
)

const (
	domain   = "example.test"
	password = "bench-Pa55"
	// Every Kamailio gets issue 7's memory: with the default 64 MB its
	// transaction table fills near 2,000 REGISTER/s and it becomes the limit.
	// A registrar's usrloc takes ~1.2 KB a contact: with 512 MB it ran
	// out near 430,000 first registrations (-register.runs 10 at 5,440/s).
	sharedMemMB, pkgMemMB = 1024, 16
	// kamailioChildren is every benchmarked Kamailio's UDP and TCP workers.
	kamailioChildren = 4
	// kamailioMemory is every benchmarked Kamailio's memory manager (-x):
	// with the default, qm, the edge proxy spent 280–296 µs per REGISTER
	// of the digest flow at 1,500/s, with tlsf 186–203 (bench/README.md).
	kamailioMemory = "tlsf"
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
	// Restarts: how often, after an overload, the hop answered none of a
	// trickle of REGISTERs and the harness restarted it, so the next probe
	// measured capacity rather than the wedge.
	Restarts int
	// At50 and At80 are runs at 50% and 80% of the edge's held rate, for
	// their round trips (Target 0: not run).
	At50, At80 probe
	// Users is how many distinct users the set-up was sent.
	Users int
}

// regFlow is one kind of REGISTER traffic the table measures.
type regFlow struct {
	Name, Title string
	Scenario    string // in internal/peertest/testdata/sipp
	// Open: the registrar saves without a digest challenge.
	Open bool
	// Fresh: every REGISTER is a user never registered before; otherwise
	// the -register.users users, each registered once before the
	// measurement, refresh their bindings in turn from the same address.
	Fresh bool
	// Registers is REGISTER requests per sipp call.
	Registers int
}

var regFlows = []regFlow{
	{Name: "first", Title: "first registrations, no digest (a new user per REGISTER)", Scenario: "register_push", Open: true, Fresh: true, Registers: 1},
	{Name: "digest", Title: "refreshes with digest (REGISTER → 401 relayed → REGISTER with credentials → 200)", Scenario: "register_auth", Registers: 2},
	{Name: "refresh", Title: "refreshes, no digest", Scenario: "register_push", Open: true, Registers: 1},
}

// BenchmarkRegisterRate measures, for each flow of regFlows and each
// set-up (Kamailio direct, a Kamailio edge proxy in front of it, sipwake as
// its own process in front of it), the highest REGISTER rate held, the
// round trip and each hop's CPU in that run, and for the edge and sipwake
// the round trip at 50% and 80% of the edge's held rate. Each
// sub-benchmark does its search once whatever b.N is: run it with
// -benchtime=1x (bench/run.sh). sipwake-inprocess (for profiles) runs only
// when asked for by name.
func BenchmarkRegisterRate(b *testing.B) {
	// What cmd/sipwake's main does once: sipgo's package logger through the
	// same redaction, and quiet below warn.
	sipgo.SetDefaultLogger(sipmsg.RedactedLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))

	var tab flowTable
	for _, fl := range regFlows {
		b.Run(fl.Name, func(b *testing.B) {
			b.Run("direct", func(b *testing.B) {
				reg := startRegistrar(b, fl.Open)
				tab.add(fl, measureFlow(b, fl, hopSetup{Name: "Kamailio direct", Remote: reg.Addr,
					Param: defaultParam, Registrar: reg.Pid()}, nil))
			})
			b.Run("edge", func(b *testing.B) {
				reg := startRegistrar(b, fl.Open)
				edge := peertest.StartKamailio(b, peertest.KamailioOptions{
					Addr: peertest.Addr(b, ipEdge, 5060), Domain: domain, EdgeUpstream: reg.Addr,
					SharedMemMB: sharedMemMB, PkgMemMB: pkgMemMB, Children: kamailioChildren, MemoryManager: kamailioMemory,
				})
				r := measureFlow(b, fl, hopSetup{Name: "Kamailio edge", Remote: edge.Addr, Param: defaultParam,
					Registrar: reg.Pid(), Hop: edge.Pid}, heldRate)
				tab.add(fl, r)
			})
			b.Run("sipwake", func(b *testing.B) {
				reg := startRegistrar(b, fl.Open)
				adminAddr := peertest.Addr(b, ipAdmin, 9060)
				p := startSipwakeProcessWith(b, reg.Addr, pushtest.NewAPNs(b), filepath.Join(b.TempDir(), "data"), store.NewKey(), map[string]string{
					"SIPWAKE_ADMIN_LISTEN":       adminAddr,
					"SIPWAKE_ADMIN_TOKEN_SHA256": admin.HashToken(benchAdminToken),
				})
				r := measureFlow(b, fl, hopSetup{Name: "sipwake", Remote: p.Addr, Param: p.Param,
					Registrar: reg.Pid(), Hop: func() int { return p.cmd.Process.Pid },
					Restart: func() { p = p.restart(b) }, Diagnose: diagnoseRegistrar(b, reg, fl),
					Searching: func() func() { return profileProcess(b, adminAddr) }},
					tab.edgeHeld(fl))
				r.RSSKiB, r.HWMKiB = p.Memory(b)
				r.StoreCount = p.StopAndCount(b)
				checkCount(b, r)
				tab.add(fl, r)
			})
			b.Run("sipwake-inprocess", func(b *testing.B) {
				if !strings.Contains(benchFilter(), "inprocess") {
					b.Skip("the in-process set-up runs only when named (-test.bench …/sipwake-inprocess)")
				}
				reg := startRegistrar(b, fl.Open)
				cfg, fake := sipwakeConfig(b, reg.Addr)
				sw := startSipwakeInProcess(b, cfg)
				dumped := false
				restart := func() {
					if !dumped {
						dumpGoroutines(b)
						dumped = true
					}
					stopInProcess(b, sw)
					sw = startSipwakeInProcess(b, cfg)
				}
				r := measureFlow(b, fl, hopSetup{Name: "sipwake in-process", Remote: sw.SIPAddr("udp"), Param: fake.Param(),
					Registrar: reg.Pid(), HopInHarness: true, Restart: restart, Diagnose: diagnoseRegistrar(b, reg, fl)}, nil)
				n, err := sw.Store().Count(context.Background())
				if err != nil {
					b.Fatalf("store count: %v", err)
				}
				r.StoreCount = n
				checkCount(b, r)
				tab.add(fl, r)
			})
		})
	}

	table := tab.render()
	fmt.Print(table)
	if *flagTable != "" {
		if err := os.WriteFile(*flagTable, []byte(table), 0o644); err != nil {
			b.Errorf("write table: %v", err)
		}
	}
}

// benchFilter is the -test.bench pattern the binary runs with.
func benchFilter() string {
	if f := flag.Lookup("test.bench"); f != nil {
		return f.Value.String()
	}
	return ""
}

// defaultParam is the pn-param of devices sent to Kamailio, which does not
// check it.
const defaultParam = "TEAM123456.org.sipwake.test.voip"

func userName(i int) string { return fmt.Sprintf("u%05d", i) }

// startRegistrar starts Kamailio as the registrar and, unless it is open
// (no digest), loads the users over its control socket: peertest writes
// them into the config, and at ~3.4 KB of pkg memory per line 5,000 users
// do not fit in -M 16.
func startRegistrar(b *testing.B, open bool) *peertest.Kamailio {
	b.Helper()
	k := peertest.StartKamailio(b, peertest.KamailioOptions{
		Addr: peertest.Addr(b, ipRegistrar, 5060), Domain: domain, Open: open,
		// One user in the config: the template's event_route must not be empty.
		Users:       map[string]string{userName(0): password},
		SharedMemMB: sharedMemMB, PkgMemMB: pkgMemMB, Children: kamailioChildren, MemoryManager: kamailioMemory,
	})
	if open {
		return k
	}
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
// of whether the registrar behind it still does: a trickle of the flow's
// REGISTERs straight to it, and its tm and shared-memory counters.
func diagnoseRegistrar(b *testing.B, reg *peertest.Kamailio, fl regFlow) func() {
	return func() {
		res, err := peertest.RunSipp(b, peertest.SippOptions{
			Name: "direct", Scenario: peertest.Scenario(b, fl.Scenario), Remote: reg.Addr,
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

// measureWith searches for the highest sustained digest-registration rate
// against remote (the cluster table's set-ups) with devices whose pn-param
// is param; restart and diagnose are hopSetup's.
func measureWith(b *testing.B, name, path, remote, param string, restart func(), diagnose func()) setupResult {
	b.Helper()
	r := measureFlow(b, regFlows[1], hopSetup{Name: name, Remote: remote, Param: param, Restart: restart, Diagnose: diagnose}, nil)
	r.Path = path
	return r
}

// hopSetup is what measureFlow drives: sipp → Remote, a hop in front of
// the registrar or the registrar itself.
type hopSetup struct {
	Name   string
	Remote string
	Param  string // the pn-param the hop accepts
	// Registrar is the registrar Kamailio's process group; Hop returns the
	// hop's (nil: no hop of its own), read after each run because a
	// restart changes it; HopInHarness: the hop runs in this process.
	Registrar    int
	Hop          func() int
	HopInHarness bool
	// Restart, when set, restarts the hop when it answered none of a
	// trickle after a run it did not hold; Diagnose runs first.
	Restart  func()
	Diagnose func()
	// Searching, when set, is called once the users are registered, as
	// the search starts; what it returns, when the search is over.
	Searching func() (over func())
}

// device is the i-th phone: user i with its own token.
func device(i int, param string) peertest.SippUser {
	return peertest.SippUser{User: userName(i), Domain: domain, Password: password,
		Provider: "apns", PRID: pushtest.APNsToken(i), Param: param}
}

// loader runs sipp for one flow against one set-up.
type loader struct {
	b        *testing.B
	fl       regFlow
	hs       hopSetup
	scenario string
	port     int
	next     int    // the first flow's next new user
	users    string // the refresh flows' injection: every user, in turn
	// short: time round trips from sipp's -trace_shortmsg (µs) instead
	// of its -trace_rtt (its millisecond clock, cheaper for sipp).
	short bool
}

func newLoader(b *testing.B, fl regFlow, hs hopSetup) *loader {
	l := &loader{b: b, fl: fl, hs: hs, scenario: peertest.Scenario(b, fl.Scenario), port: 6000}
	if !fl.Fresh {
		devs := make([]peertest.SippUser, *flagUsers)
		for i := range devs {
			devs[i] = device(i, hs.Param)
		}
		l.users = peertest.RegisterInjection(devs...)
	}
	return l
}

// injection is the users of a run of calls: new ones for the first flow.
func (l *loader) injection(calls int) string {
	if !l.fl.Fresh {
		return l.users
	}
	devs := make([]peertest.SippUser, calls)
	for i := range devs {
		devs[i] = device(l.next+i, l.hs.Param)
	}
	l.next += calls
	return peertest.RegisterInjection(devs...)
}

// run is one sipp run of d at rate.
func (l *loader) run(rate int, d time.Duration) probe {
	b := l.b
	if l.fl.Fresh || l.port == 6000 {
		// A fresh port per run, so late answers to the last run are not
		// this run's; refreshes keep theirs, as a phone does (a new port
		// is a new contact and flow, a change to write, not a refresh).
		l.port++
	}
	calls := max(rate*int(d/time.Second), rate*int(d/time.Millisecond)/1000)
	short := ""
	if l.short {
		short = filepath.Join(b.TempDir(), "short.log")
	}
	cpu := startCPU()
	res := runRegisters(b, peertest.SippOptions{
		Name: fmt.Sprintf("r%d", rate), Scenario: l.scenario, Remote: l.hs.Remote, LocalPort: l.port,
		Calls: calls, Rate: float64(rate), Injection: l.injection(calls),
		TraceRTT: !l.short, Timeout: d + 8*time.Second,
	}, short)
	p := newProbe(rate, calls, res)
	p.CPU = cpu.stop(res.CPU)
	l.keep(res.StatsPath, rate, "csv")
	if p.Failed > 0 {
		l.keep(res.ErrorsPath, rate, "err.log") // what sipp did not expect
	}
	if l.short {
		l.keep(short, rate, "short.log")
	}
	p.CPU.Registrar = p.CPU.Groups[l.hs.Registrar]
	switch {
	case l.hs.HopInHarness:
		p.CPU.Hop = p.CPU.Harness
	case l.hs.Hop != nil:
		p.CPU.Hop = p.CPU.Groups[l.hs.Hop()]
	}
	var rtt []time.Duration
	var err error
	if l.short {
		rtt, err = requestRoundTrips(short)
	} else {
		rtt, err = res.ResponseTimes()
		slices.Sort(rtt)
	}
	if err != nil {
		b.Logf("%s: round trips: %v", l.hs.Name, err)
	}
	p.RTT = summarize(rtt)
	b.Logf("%s: %v; round trip %v; CPU ms: hop %d, registrar %d, sipp %d", l.hs.Name, p, p.RTT,
		p.CPU.Hop.Milliseconds(), p.CPU.Registrar.Milliseconds(), p.CPU.Sipp.Milliseconds())
	time.Sleep(time.Second) // let retransmissions and tm timers drain
	return p
}

// runRegisters runs sipp with o, plus what every REGISTER run of the
// harness shares: from the sipp address over UDP, half a second of calls
// in flight (a peer slower than that holds sipp's call creation below its
// target instead of drowning in retransmissions, and the run does not
// hold), expires 3600, no message trace, large socket buffers, a 5 s
// receive timeout and, with short set, sipp's short-message trace there.
func runRegisters(b *testing.B, o peertest.SippOptions, short string) *peertest.SippResult {
	b.Helper()
	o.LocalIP, o.Transport = peertest.IP(b, ipSipp), "u1"
	o.Limit = max(int(o.Rate)/2, 50)
	o.Keys = map[string]string{"expires": "3600"}
	o.NoMessageTrace = true
	// A REGISTER that fails is a failed call, and that is all: sipp's
	// default is to abort such a call with a BYE, which no phone sends
	// for a REGISTER, and which a hop that refuses load (503) must then
	// answer too, at the worst time.
	o.Args = append([]string{"-recv_timeout", "5000", "-default_behaviors", "all,-bye"}, sippBuffers...)
	if short != "" {
		o.Args = append(o.Args, "-trace_shortmsg", "-shortmessage_file", short)
	}
	res, err := peertest.RunSipp(b, o)
	if res == nil {
		b.Fatalf("sipp: %v", err)
	}
	return res
}

// keep copies a file of the run (its -trace_stat file, its -trace_err
// file when calls failed, its short-message trace) into -register.stats.
func (l *loader) keep(path string, rate int, ext string) {
	if *flagStatsDir == "" {
		return
	}
	b, err := os.ReadFile(path)
	if err == nil {
		name := fmt.Sprintf("%s-%s-r%d-p%d.%s", l.fl.Name, strings.ReplaceAll(l.hs.Name, " ", "_"), rate, l.port, ext)
		err = os.WriteFile(filepath.Join(*flagStatsDir, name), b, 0o644)
	}
	if err != nil {
		l.b.Logf("keep sipp stats: %v", err)
	}
}

// primeRate registers the refresh flows' users once before they refresh.
const primeRate = 1000

// settle is how long every set-up rests after a run it did not hold:
// longer than sipwake's sip.upstream_timeout (5 s), so the REGISTERs of
// the overload whose answers the registrar dropped have timed out and
// left the in-flight bound (sip.max_registers_in_flight) before the next
// run. Without it, a run at a rate sipwake holds, right after a collapse,
// met that bound nearly full and collapsed too (13,600 and 11,550
// refreshes/s, about half failed, after 16,000/s).
const settle = 6 * time.Second

// measureFlow searches for the highest rate hs holds in flow fl (or runs
// -register.rate once) and then, when latencyBase gives a rate, one run at
// 50% and one at 80% of it for their round trips. After a run a set-up
// did not hold, the harness waits settle. Then, for a set-up with a
// Restart, a trickle of REGISTERs checks whether it still answers; if it
// answers none, Diagnose runs (the first three times) and Restart is
// called, as a supervisor's health check would. A hop that sheds an
// overload and answers again goes on as it is, warm, as the Kamailio edge
// does: a restart before every probe after the first failed one had the
// next probe measure a cold process.
func measureFlow(b *testing.B, fl regFlow, hs hopSetup, latencyBase func(own probe) int) setupResult {
	b.Helper()
	l := newLoader(b, fl, hs)
	res := setupResult{Name: hs.Name}
	if !fl.Fresh {
		p := l.run(primeRate, time.Duration(*flagUsers)*time.Second/primeRate)
		if p.Successful < *flagUsers {
			b.Logf("%s: only %d of %d users registered before the refreshes", hs.Name, p.Successful, *flagUsers)
		}
	}
	run := func(rate int, d time.Duration) probe {
		p := l.run(rate, d)
		if p.Sustained() {
			return p
		}
		time.Sleep(settle)
		if hs.Restart == nil {
			return p
		}
		trickle := l.run(20, time.Second)
		b.Logf("%s: after overload, a trickle of 20/s: %v", hs.Name, trickle)
		if trickle.Successful == 0 {
			if hs.Diagnose != nil && res.Restarts < 3 {
				hs.Diagnose()
			}
			hs.Restart()
			res.Restarts++
		}
		return p
	}

	for i := 1; *flagRate > 0 && i < *flagRuns; i++ {
		run(*flagRate, defaultPlan.Sustain)
	}
	if *flagCold && *flagRate > 0 && hs.Restart != nil {
		hs.Restart()
	}
	over := func() {}
	if hs.Searching != nil {
		over = hs.Searching()
	}
	if *flagRate > 0 {
		res.Best = run(*flagRate, defaultPlan.Sustain)
		res.Tried = []probe{res.Best}
	} else {
		res.Best, res.Tried = findMaxRate(defaultPlan, run)
	}
	over()
	if latencyBase != nil && *flagRate == 0 {
		if base := latencyBase(res.Best); base > 0 {
			l.short = true
			res.At50 = run(base/2, defaultPlan.Sustain)
			res.At80 = run(base*4/5, defaultPlan.Sustain)
		}
	}
	res.Users = *flagUsers
	if fl.Fresh {
		res.Users = l.next
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(res.Best.Achieved(), "REGISTER/s")
	b.ReportMetric(100*res.Best.FailedShare(), "%failed")
	return res
}

// checkCount holds sipwake to one record per device registered: every user
// that completed a registration is one AOR with one device, and no more
// than the users sent.
func checkCount(b *testing.B, r setupResult) {
	b.Helper()
	want := 0
	for _, p := range r.Tried {
		want = max(want, min(p.Successful, r.Users))
	}
	if r.StoreCount < want || r.StoreCount > r.Users {
		b.Errorf("%s: store holds %d records, want %d..%d", r.Name, r.StoreCount, want, r.Users)
	}
}

// flowTable gathers the rows of BenchmarkRegisterRate by flow.
type flowTable struct {
	mu   sync.Mutex
	rows map[string][]setupResult
}

func (t *flowTable) add(fl regFlow, r setupResult) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rows == nil {
		t.rows = map[string][]setupResult{}
	}
	t.rows[fl.Name] = append(t.rows[fl.Name], r)
}

// edge is flow fl's Kamailio edge row (nil before it ran).
func (t *flowTable) edge(fl regFlow) *setupResult {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, r := range t.rows[fl.Name] {
		if r.Name == edgeName {
			return &t.rows[fl.Name][i]
		}
	}
	return nil
}

const edgeName = "Kamailio edge"

// heldRate is a latencyBase: the rate p held, 0 if it did not.
func heldRate(p probe) int {
	if !p.Sustained() {
		return 0
	}
	return p.Target
}

// edgeHeld is the latencyBase of a set-up compared with flow fl's edge.
func (t *flowTable) edgeHeld(fl regFlow) func(probe) int {
	return func(probe) int {
		if e := t.edge(fl); e != nil {
			return heldRate(e.Best)
		}
		return 0
	}
}

// render is the table: one row per flow and set-up, then the round trips
// at 50% and 80% of the edge's held rate.
func (t *flowTable) render() string {
	var s strings.Builder
	fmt.Fprintf(&s, "\nREGISTER over UDP: sipp → set-up → Kamailio registrar (usrloc in memory), %d users refreshing (%s)\n", *flagUsers, time.Now().Format(time.DateOnly))
	fmt.Fprintf(&s, "held: highest sipp -r whose %v run had a median per-second call creation ≥ 95%% of -r and < 1%% failed calls\n", defaultPlan.Sustain)
	s.WriteString("round trip: each REGISTER's first send → its final answer, in the held run from sipp -trace_rtt (sipp's millisecond clock)\n")
	s.WriteString("CPU: user+system of each process group in the held run, per REGISTER (a digest registration is 2 REGISTERs)\n\n")
	fmt.Fprintf(&s, "%-8s %-17s %7s %8s %7s %7s %7s %7s %7s %7s  %s\n",
		"flow", "set-up", "held/s", "vs edge", "p50 ms", "p99 ms", "hop µs", "reg µs", "sipp µs", "retrans", "notes")
	for _, fl := range regFlows {
		edge := t.edge(fl)
		for _, r := range t.rows[fl.Name] {
			p := r.Best
			held, ratio := "-", "-"
			if p.Sustained() {
				held = strconv.Itoa(p.Target)
				if edge != nil && heldRate(edge.Best) > 0 {
					ratio = fmt.Sprintf("%.2f", float64(p.Target)/float64(edge.Best.Target))
				}
			}
			perReg := func(d time.Duration) string {
				n := p.Successful * fl.Registers
				if n == 0 || d == 0 {
					return "-"
				}
				return fmt.Sprintf("%.0f", float64(d.Microseconds())/float64(n))
			}
			fmt.Fprintf(&s, "%-8s %-17s %7s %8s %7s %7s %7s %7s %7s %7d  %s\n", fl.Name, r.Name, held, ratio,
				ms(p.RTT.P50), ms(p.RTT.P99), perReg(p.CPU.Hop), perReg(p.CPU.Registrar), perReg(p.CPU.Sipp),
				p.Retransmissions, strings.Join(r.notes(), "; "))
		}
	}
	fmt.Fprintf(&s, "\nRound trip at 50%% and 80%% of the edge's held rate (same run, one %v run each; from sipp -trace_shortmsg, µs):\n", defaultPlan.Sustain)
	fmt.Fprintf(&s, "%-8s %-17s %7s %7s %7s %7s   %7s %7s %7s %7s\n", "flow", "set-up", "-r", "p50 ms", "p99 ms", "retrans", "-r", "p50 ms", "p99 ms", "retrans")
	for _, fl := range regFlows {
		for _, r := range t.rows[fl.Name] {
			if r.At50.Target == 0 {
				continue
			}
			at := func(p probe) string {
				mark := ""
				if !p.Sustained() {
					mark = "!" // did not hold
				}
				return fmt.Sprintf("%7s %7s %7s %7d", strconv.Itoa(p.Target)+mark, ms(p.RTT.P50), ms(p.RTT.P99), p.Retransmissions)
			}
			fmt.Fprintf(&s, "%-8s %-17s %s   %s\n", fl.Name, r.Name, at(r.At50), at(r.At80))
		}
	}
	s.WriteString("(! after -r: that run did not hold)\n\nFlows:\n")
	for _, fl := range regFlows {
		fmt.Fprintf(&s, "  %-8s %s\n", fl.Name, fl.Title)
	}
	return s.String()
}

// ms renders a round trip in milliseconds ("-" for none).
func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond))
}

// notes are a row's remarks: not held, restarts, records, memory.
func (r setupResult) notes() []string {
	var notes []string
	if !r.Best.Sustained() {
		notes = append(notes, fmt.Sprintf("NOT HELD at any rate tried (last -r %d)", r.Best.Target))
	}
	if r.StoreCount > 0 {
		notes = append(notes, fmt.Sprintf("store count %d", r.StoreCount))
	}
	if r.Restarts > 0 {
		notes = append(notes, fmt.Sprintf("WEDGED %d times after overload (answered nothing at 20/s), restarted", r.Restarts))
	}
	if r.RSSKiB > 0 {
		notes = append(notes, fmt.Sprintf("RSS %.1f MiB (peak %.1f)", float64(r.RSSKiB)/1024, float64(r.HWMKiB)/1024))
	}
	return notes
}

func renderTable(rows []setupResult) string {
	var base float64
	for _, r := range rows {
		if strings.HasPrefix(r.Name, "a)") {
			base = r.Best.Achieved()
		}
	}
	var s strings.Builder
	fmt.Fprintf(&s, "\nREGISTER rate, register_auth.xml over UDP, %d users refreshing, held %v (median creation ≥ 95%% of -r, <1%% failed) (%s)\n", *flagUsers, defaultPlan.Sustain, time.Now().Format(time.DateOnly))
	fmt.Fprintf(&s, "%-24s %-46s %11s %8s %7s  %s\n", "set-up", "path", "REGISTER/s", "failed", "vs a)", "notes")
	for _, r := range rows {
		ratio := "-"
		if base > 0 {
			ratio = fmt.Sprintf("%.2f", r.Best.Achieved()/base)
		}
		notes := append([]string{fmt.Sprintf("-r %d", r.Best.Target)}, r.notes()...)
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
