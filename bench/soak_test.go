package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/store"
)

var (
	flagSoakDuration = flag.Duration("soak.duration", 30*time.Minute, "soak: how long the load runs; then it stops by itself")
	flagSoakEvery    = flag.Duration("soak.every", time.Minute, "soak: how often every node is measured (one report row each)")
	flagSoakTTL      = flag.Duration("soak.record_ttl", 2*time.Minute, "soak: the nodes' record TTL, short so that records expire and are swept during the run")
	flagSoakTable    = flag.String("soak.table", "", "soak: also append the report to this file as it is written")
)

// The soak's load, per set-up; both set-ups run it side by side, on one
// registrar and one fake APNs. The rates are low on purpose: a soak looks
// for growth over time, not for capacity, and it shares two cores.
const (
	// REGISTER/s from sipp (register_auth.xml) over soakRegUsers users in
	// turn: each comes back every 300 s, after its record expired (TTL
	// 2 min) and was swept, so every registration stores a new record.
	soakRegRate, soakRegUsers = 10, 3000
	// Answered calls/s (caller_inf_answered.xml) to soakWoken devices:
	// each call is pushed, the device re-registers, answers, BYE. Each
	// device is called every ~67 s, under the 10 call pushes a minute cap.
	soakCallRate, soakWoken = 3, 200
	// Cancelled calls/s (caller_inf_cancel.xml) to soakSleepers devices,
	// which never wake: pushed, parked, cancelled at the second 180. Each
	// is called every 50 s.
	soakCancelRate, soakSleepers = 1, 50
	// Handed-over accounts (the HTTPS API), granted soakAccountExpires s by
	// the registrar, so sipwake refreshes each upstream every ~16 s; every
	// soakHandoverEvery one account is posted again (its TTL starts again),
	// and every sixth time it is deleted first (erased, un-registered, then
	// a new account).
	soakAccounts, soakAccountExpires = 20, 20
	soakHandoverEvery                = 10 * time.Second

	// The user blocks: set-up s has users s*soakUsersPer + [0, soakRegUsers)
	// for sipp, then the woken devices, the sleepers and the accounts.
	soakUsersPer                                       = 4000
	soakWokenFrom, soakSleepersFrom, soakAccountsFrom  = 3000, 3200, 3300
	soakIPNodes, soakIPDispatcher, soakIPRegistrations = 20, 30, 31

	// The load must be done: at most 1% of each kind of operation may
	// fail, and sipp must have completed at least 95% of the calls it
	// was given.
	soakMaxFailed, soakMinDone = 0.01, 0.95
)

// BenchmarkSoak runs churn for -soak.duration against one sipwake node on
// bbolt and, side by side, three nodes on one Redis behind a Kamailio
// dispatcher: devices registering and refreshing, calls woken by push and
// answered, calls cancelled, records expiring and swept, handed-over
// accounts refreshed upstream. Every -soak.every it measures each node
// (RSS and open files from /proc, goroutines from its /metrics, records
// and store size) and at the end fails on a series that does not level
// off (levelRule) or on a load that was not done. Run with -benchtime=1x
// (bash bench/run.sh soak [DURATION]).
func BenchmarkSoak(b *testing.B) {
	quietSipgo()
	d, every := *flagSoakDuration, *flagSoakEvery
	reg := startRegistrarN(b, 2*soakUsersPer)
	key, keyHash, err := api.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	setups := []*soakSetup{
		{name: "1 node (bbolt)", base: 0, reg: reg, apiKey: key},
		{name: "3 nodes (Redis)", base: soakUsersPer, reg: reg, apiKey: key},
	}
	wake := map[string]func(){} // a woken device's token → it re-registers
	for _, s := range setups {
		for _, i := range s.woken() {
			wake[pushtest.APNsToken(i)] = func() { s.wakeUp(i) }
		}
	}
	fake, err := pushtest.StartAPNs(pushtest.APNsOptions{Dir: b.TempDir(), OnPush: func(p pushtest.Push) {
		if f := wake[p.Token]; f != nil && callPush(p) != "" {
			go f() // the app wakes and re-registers from its usual address
		}
	}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(fake.Close)
	r := &soakReport{out: os.Stdout}
	if *flagSoakTable != "" {
		f, err := os.OpenFile(*flagSoakTable, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		r.out = f
	}
	for _, s := range setups {
		s.fake = fake
	}
	setups[0].startSingle(b, keyHash)
	setups[1].startCluster(b, keyHash)
	for _, s := range setups {
		s.startDevices(b)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var churn sync.WaitGroup
	r.printf("\nSoak: %v, measured every %v, record TTL %v (%s)\n", d, every, *flagSoakTTL, time.Now().UTC().Format(time.DateTime+" MST"))
	r.printf("per set-up: sipp REGISTER %d/s over %d users; answered calls %d/s to %d woken devices; cancelled calls %d/s to %d sleeping devices;\n"+
		"  devices refreshing every %v; %d handed-over accounts (expires %d s), one re-posted every %v (every sixth deleted first)\n",
		soakRegRate, soakRegUsers, soakCallRate, soakWoken, soakCancelRate, soakSleepers, soakRefreshEvery(), soakAccounts, soakAccountExpires, soakHandoverEvery)
	r.header()
	start := time.Now()
	for i, s := range setups {
		s.startLoad(b, d, i)
		churn.Add(2)
		go func() { defer churn.Done(); repeat(ctx, soakRefreshEvery(), func() { s.refreshDevices(ctx) }) }()
		go func() { defer churn.Done(); repeat(ctx, soakHandoverEvery, func() { s.handOver(ctx) }) }()
	}
	tick := time.NewTicker(every)
	for t := every; t <= d; t += every {
		<-tick.C
		for _, s := range setups {
			s.sample(b, r, time.Since(start))
		}
	}
	tick.Stop()
	for _, s := range setups {
		s.finishLoad(b)
	}
	cancel()
	churn.Wait()
	for _, s := range setups {
		s.judge(b, r, d)
	}
	b.ReportMetric(0, "ns/op")
}

// soakRefreshEvery is how often every woken and sleeping device
// re-registers by itself: twice per record TTL, so none expires.
func soakRefreshEvery() time.Duration { return *flagSoakTTL / 2 }

// soakReport is the report, written as it goes.
type soakReport struct {
	out io.Writer
}

func (r *soakReport) printf(format string, args ...any) { _, _ = fmt.Fprintf(r.out, format, args...) }

func (r *soakReport) header() {
	r.printf("%-7s %-16s %-6s %8s %10s %5s %8s %10s %7s %8s | %s\n", "t", "set-up", "node", "RSS MiB", "goroutines", "fds",
		"records", "store MiB", "sweeps", "expired", "load so far (sipp ok/failed; devices' REGISTERs, API calls ok/failed)")
}

// soakSetup is one set-up under soak: its nodes, the address devices
// register at (the node, or the dispatcher), its devices and its load.
type soakSetup struct {
	name   string
	base   int
	reg    *peertest.Kamailio
	fake   *pushtest.APNs
	apiKey string
	nodes  []*soakNode
	front  string
	redis  *goredis.Client // nil on bbolt
	pool   *devicePool
	// redisUsed is the shared store's used_memory per sample (Redis).
	redisUsed []float64

	regs, calls, cancels *peertest.Sipp

	devOK, devFailed, apiOK, apiFailed atomic.Int64
	accountTick                        int
	// lastErr is the last device REGISTER or API call that failed, for
	// the report.
	lastErr atomic.Value
}

// soakNode is one node and what was measured of it, per sample.
type soakNode struct {
	name                                string
	proc                                *sipwakeProcess
	metrics                             scraped
	api                                 string
	rss, goroutines, fds, records, size []float64
	last                                prometheus.Gatherer // the last sample's /metrics
}

func (s *soakSetup) startSingle(b *testing.B, keyHash string) {
	addr := peertest.Addr(b, ipSipwake, 5060)
	s.front = addr
	s.nodes = []*soakNode{s.startNode(b, "n1", addr, map[string]string{}, keyHash)}
}

func (s *soakSetup) startCluster(b *testing.B, keyHash string) {
	sock := peertest.StartRedis(b, "")
	s.redis = goredis.NewClient(&goredis.Options{Network: "unix", Addr: sock})
	b.Cleanup(func() { _ = s.redis.Close() })
	s.front = peertest.Addr(b, soakIPDispatcher, 5060)
	trusted := []string{peertest.IP(b, soakIPDispatcher) + "/32"}
	for i := range 3 {
		trusted = append(trusted, peertest.IP(b, soakIPNodes+i)+"/32")
	}
	trustedJSON, _ := json.Marshal(trusted)
	seal := store.NewKey()
	var addrs []string
	for i := range 3 {
		addr := peertest.Addr(b, soakIPNodes+i, 5060)
		s.nodes = append(s.nodes, s.startNodeKey(b, fmt.Sprintf("n%d", i+1), addr, seal, map[string]string{
			"SIPWAKE_SIP_PUBLIC_ADDRESS":    s.front,
			"SIPWAKE_CLUSTER_NODE_ADDRESS":  addr,
			"SIPWAKE_CALLS_TRUSTED_SOURCES": string(trustedJSON),
			"SIPWAKE_STORE_BACKEND":         "redis",
			"SIPWAKE_STORE_REDIS_ADDRS":     `["` + sock + `"]`,
		}, keyHash))
		addrs = append(addrs, addr)
	}
	peertest.StartKamailio(b, peertest.KamailioOptions{Addr: s.front, Domain: domain, Dispatch: addrs,
		SharedMemMB: sharedMemMB, PkgMemMB: pkgMemMB, Children: kamailioChildren})
}

func (s *soakSetup) startNode(b *testing.B, name, addr string, env map[string]string, keyHash string) *soakNode {
	return s.startNodeKey(b, name, addr, store.NewKey(), env, keyHash)
}

// startNodeKey starts a soak node (this binary re-executed, see
// soakNodeEnv) at addr, with its admin and API listeners on the same IP.
func (s *soakSetup) startNodeKey(b *testing.B, name, addr string, seal []byte, env map[string]string, keyHash string) *soakNode {
	b.Helper()
	host, _, _ := strings.Cut(addr, ":")
	bin, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	set := map[string]string{
		soakNodeEnv:                      flagSoakTTL.String(),
		"SIPWAKE_SIP_LISTEN_UDP":         addr,
		"SIPWAKE_SIP_LISTEN_TCP":         addr,
		"SIPWAKE_ADMIN_LISTEN":           host + ":9060",
		"SIPWAKE_API_LISTEN":             host + ":8080",
		"SIPWAKE_API_KEYS":               `[{app: soak, sha256: "` + keyHash + `"}]`,
		"SIPWAKE_CALLS_WAIT":             "10s",
		"SIPWAKE_STORE_SWEEP_INTERVAL":   "15s",
		"SIPWAKE_STORE_COMPACT_INTERVAL": "5m",
	}
	for k, v := range env {
		set[k] = v
	}
	p := startProcessNode(b, bin, s.reg.Addr, s.fake, filepath.Join(b.TempDir(), "data"), seal, set)
	return &soakNode{name: name, proc: p, metrics: scraped("http://" + host + ":9060/metrics"), api: "http://" + host + ":8080"}
}

// startDevices registers the woken and the sleeping devices and the
// handed-over accounts.
func (s *soakSetup) startDevices(b *testing.B) {
	b.Helper()
	port := 5070 + s.base/soakUsersPer*10
	s.pool = startDevicePool(b, peertest.Addr(b, ipDevice, port), s.front, s.fake.Param())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s.refreshDevices(ctx)
	if n := s.devFailed.Load(); n > 0 {
		b.Fatalf("%s: %d of %d devices did not register", s.name, n, soakWoken+soakSleepers)
	}
	for i := range soakAccounts {
		if err := s.putAccount(ctx, i); err != nil {
			b.Fatalf("%s: hand over account %d: %v", s.name, i, err)
		}
	}
}

// wakeUp is woken device i's app, woken by its call push: it
// re-registers from its usual address.
func (s *soakSetup) wakeUp(i int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.countDevice(ctx, s.pool.Register(ctx, userName(i), s.fake.VoIPToken(i)))
}

func (s *soakSetup) woken() []int    { return userRange(s.base+soakWokenFrom, soakWoken) }
func (s *soakSetup) sleeping() []int { return userRange(s.base+soakSleepersFrom, soakSleepers) }

func userRange(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

// refreshDevices re-registers every woken and sleeping device, 8 at a
// time.
func (s *soakSetup) refreshDevices(ctx context.Context) {
	users := append(s.woken(), s.sleeping()...)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := int(next.Add(1)) - 1; j < len(users) && ctx.Err() == nil; j = int(next.Add(1)) - 1 {
				s.countDevice(ctx, s.pool.Register(ctx, userName(users[j]), s.fake.VoIPToken(users[j])))
			}
		}()
	}
	wg.Wait()
}

// repeat calls f every d until ctx ends.
func repeat(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// handOver posts one account again, each in turn, round robin over the
// nodes; every sixth time it is deleted first.
func (s *soakSetup) handOver(ctx context.Context) {
	s.accountTick++
	i := s.accountTick % soakAccounts
	if s.accountTick%6 == 0 {
		s.count(s.deleteAccount(ctx, i))
	}
	s.count(s.putAccount(ctx, i))
}

// countDevice counts a device REGISTER, unless the end of the soak cut
// it short (ctx done).
func (s *soakSetup) countDevice(ctx context.Context, err error) {
	switch {
	case err == nil:
		s.devOK.Add(1)
	case ctx.Err() == nil:
		s.lastErr.Store(err.Error())
		s.devFailed.Add(1)
	}
}

func (s *soakSetup) count(err error) {
	if err != nil {
		s.lastErr.Store(err.Error())
		s.apiFailed.Add(1)
		return
	}
	s.apiOK.Add(1)
}

// apiNode spreads API calls over the nodes.
func (s *soakSetup) apiNode(i int) string { return s.nodes[i%len(s.nodes)].api }

func (s *soakSetup) putAccount(ctx context.Context, i int) error {
	u := s.base + soakAccountsFrom + i
	body, _ := json.Marshal(map[string]any{
		"aor": userName(u) + "@" + domain, "registrar": "sip:" + s.reg.Addr, "username": userName(u), "password": password,
		"expires": soakAccountExpires,
		"push":    map[string]string{"provider": "apns", "token": s.fake.VoIPToken(u), "param": s.fake.Param()},
	})
	return s.apiCall(ctx, http.MethodPut, i, body, http.StatusOK, http.StatusCreated)
}

func (s *soakSetup) deleteAccount(ctx context.Context, i int) error {
	return s.apiCall(ctx, http.MethodDelete, i, nil, http.StatusNoContent)
}

func (s *soakSetup) apiCall(ctx context.Context, method string, i int, body []byte, want ...int) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, fmt.Sprintf("%s/v1/accounts/soak-%d", s.apiNode(s.accountTick+i), i), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	for _, w := range want {
		if res.StatusCode == w {
			return nil
		}
	}
	var msg bytes.Buffer
	_, _ = msg.ReadFrom(res.Body)
	return fmt.Errorf("%s account %d: %d %s", method, i, res.StatusCode, strings.TrimSpace(msg.String()))
}

// startLoad starts the set-up's three sipps, each with exactly the calls
// it makes at its rate over d, so each ends by itself; i spreads their
// ports.
func (s *soakSetup) startLoad(b *testing.B, d time.Duration, i int) {
	b.Helper()
	secs := int(d / time.Second)
	devs := make([]peertest.SippUser, soakRegUsers)
	for j := range devs {
		u := s.base + j
		devs[j] = peertest.SippUser{User: userName(u), Domain: domain, Password: password,
			Provider: "apns", PRID: pushtest.APNsToken(u), Param: s.fake.Param()}
	}
	s.regs = peertest.StartSipp(b, peertest.SippOptions{
		Name: fmt.Sprintf("soak-register-%d", i), Scenario: peertest.Scenario(b, "register_auth"), Remote: s.front,
		LocalIP: peertest.IP(b, soakIPRegistrations), LocalPort: 6000 + i,
		Calls: soakRegRate * secs, Rate: soakRegRate, Limit: 100,
		Injection: peertest.RegisterInjection(devs...), Keys: map[string]string{"expires": "3600"},
		NoMessageTrace: true, Timeout: d + 3*time.Minute,
		Args: append([]string{"-recv_timeout", "10000"}, sippBuffers...),
	})
	woken, sleeping := s.woken(), s.sleeping()
	answered := &caller{b: b, remote: s.reg.Addr, scenario: "caller_inf_answered",
		inf: calleeInjection(b, woken[0], woken[len(woken)-1]+1), port: 7000 + 200*i, limit: callLimit}
	s.calls, _ = answered.start("soak-answered", soakCallRate, soakCallRate*secs, d+3*time.Minute)
	cancelled := &caller{b: b, remote: s.reg.Addr, scenario: "caller_inf_cancel",
		inf: calleeInjection(b, sleeping[0], sleeping[len(sleeping)-1]+1), port: 7100 + 200*i, limit: callLimit}
	s.cancels, _ = cancelled.start("soak-cancelled", soakCancelRate, soakCancelRate*secs, d+3*time.Minute)
}

// finishLoad waits for the set-up's sipps, which end once their last
// calls are done.
func (s *soakSetup) finishLoad(b *testing.B) {
	for _, p := range []*peertest.Sipp{s.regs, s.calls, s.cancels} {
		if _, err := p.Wait(3 * time.Minute); err != nil {
			b.Logf("%s: %v", s.name, err)
		}
	}
}

// sample measures every node of the set-up and reports one row each.
func (s *soakSetup) sample(b *testing.B, r *soakReport, at time.Duration) {
	b.Helper()
	var used float64
	if s.redis != nil {
		used = redisUsedMemory(b, s.redis)
		s.redisUsed = append(s.redisUsed, used)
	}
	for _, n := range s.nodes {
		fams, err := n.metrics.Gather()
		if err != nil {
			b.Fatalf("%s %s: /metrics: %v", s.name, n.name, err)
		}
		m := prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return fams, nil })
		n.last = m
		rss, _ := n.proc.Memory(b)
		fds, err := n.proc.OpenFiles()
		if err != nil {
			b.Fatal(err)
		}
		size := gaugeValue(m, "sipwake_store_size_bytes", "")
		if s.redis != nil {
			size = used
		}
		n.rss = append(n.rss, float64(rss))
		n.fds = append(n.fds, float64(fds))
		n.goroutines = append(n.goroutines, gaugeValue(m, "go_goroutines", ""))
		n.records = append(n.records, gaugeValue(m, "sipwake_store_records", ""))
		n.size = append(n.size, size)
		r.printf("%-7s %-16s %-6s %8.1f %10.0f %5d %8.0f %10.2f %7.0f %8.0f | %s\n", at.Round(time.Second), s.name, n.name,
			float64(rss)/1024, gaugeValue(m, "go_goroutines", ""), fds, gaugeValue(m, "sipwake_store_records", ""), size/(1<<20),
			gaugeValue(m, "sipwake_store_sweeps_total", ""), gaugeValue(m, "sipwake_bindings_erased_total", "expired"), s.loadSoFar())
	}
}

// loadSoFar is what the load generators did up to now.
func (s *soakSetup) loadSoFar() string {
	sipp := func(p *peertest.Sipp) string {
		res := p.Result()
		return fmt.Sprintf("%d/%d", res.Successful, res.Failed)
	}
	return fmt.Sprintf("REGISTER %s, answered %s, cancelled %s; devices %d/%d, API %d/%d", sipp(s.regs), sipp(s.calls), sipp(s.cancels),
		s.devOK.Load(), s.devFailed.Load(), s.apiOK.Load(), s.apiFailed.Load())
}

func redisUsedMemory(b *testing.B, c *goredis.Client) float64 {
	info, err := c.Info(context.Background(), "memory").Result()
	if err != nil {
		b.Fatalf("redis INFO memory: %v", err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("redis used_memory %q: %v", v, err)
			}
			return n
		}
	}
	b.Fatal("redis INFO memory: no used_memory")
	return 0
}

// judge reports the set-up's operations and each series' verdict, and
// fails the benchmark on growth that did not level off or on a load that
// was not done.
func (s *soakSetup) judge(b *testing.B, r *soakReport, d time.Duration) {
	secs := float64(d / time.Second)
	r.printf("\n%s, operations done:\n", s.name)
	var problems []error
	op := func(what string, ok, failed int64, planned float64) {
		share := 0.0
		if ok+failed > 0 {
			share = float64(failed) / float64(ok+failed)
		}
		line := fmt.Sprintf("  %-46s %7d ok %5d failed (%.2f%%)", what, ok, failed, 100*share)
		if planned > 0 {
			line += fmt.Sprintf(", %.1f%% of the %.0f planned", 100*float64(ok+failed)/planned, planned)
			if float64(ok+failed) < soakMinDone*planned {
				problems = append(problems, fmt.Errorf("%s: %s: only %d of %.0f done", s.name, what, ok+failed, planned))
			}
		}
		r.printf("%s\n", line)
		if share > soakMaxFailed || ok == 0 {
			problems = append(problems, fmt.Errorf("%s: %s: %d ok, %d failed", s.name, what, ok, failed))
		}
	}
	for _, p := range []struct {
		what string
		sipp *peertest.Sipp
		rate float64
	}{
		{"REGISTERs (sipp register_auth)", s.regs, soakRegRate},
		{"calls woken and answered (sipp caller)", s.calls, soakCallRate},
		{"calls cancelled after the push (sipp caller)", s.cancels, soakCancelRate},
	} {
		res := p.sipp.Result()
		op(p.what, int64(res.Successful), int64(res.Failed), p.rate*secs)
	}
	op("device REGISTERs (woken, refreshing)", s.devOK.Load(), s.devFailed.Load(), 0)
	op(fmt.Sprintf("API PUT/DELETE of %d accounts", soakAccounts), s.apiOK.Load(), s.apiFailed.Load(), 0)
	r.printf("  devices answered %d INVITEs, %d BYEs\n", s.pool.Answered.Load(), s.pool.Byes.Load())
	if e, ok := s.lastErr.Load().(string); ok {
		r.printf("  last device or API failure: %s\n", e)
	}

	for _, n := range s.nodes {
		v := func(name, label string) float64 { return gaugeValue(n.last, name, label) }
		r.printf("  %s: calls delivered %.0f, cancelled %.0f, timed out %.0f, failed %.0f; bindings stored %.0f, erased as expired %.0f; "+
			"sweeps %.0f, compactions %.0f; handed-over accounts registered here %.0f, standby %.0f\n", n.name,
			v("sipwake_calls_total", "delivered"), v("sipwake_calls_total", "cancelled"), v("sipwake_calls_total", "timed_out"), v("sipwake_calls_total", "failed"),
			v("sipwake_bindings_stored_total", ""), v("sipwake_bindings_erased_total", "expired"),
			v("sipwake_store_sweeps_total", ""), v("sipwake_store_compactions_total", ""),
			v("sipwake_upstream_registrations", "registered"), v("sipwake_upstream_registrations", "standby"))
	}
	r.printf("%s, growth (first third warm-up; last third's mean vs the middle third's):\n", s.name)
	check := func(what string, rule levelRule, xs []float64, unit float64, u string) {
		v := rule.judge(xs)
		scaled := levelVerdict{Judged: v.Judged, Middle: v.Middle / unit, Last: v.Last / unit, Limit: v.Limit / unit}
		r.printf("  %-26s start %8.1f  end %8.1f  peak %8.1f %-10s %v\n", what, xs[0]/unit, xs[len(xs)-1]/unit, peak(xs)/unit, u, scaled)
		if v.Grew() {
			problems = append(problems, fmt.Errorf("%s: %s grew: %v", s.name, what, scaled))
		}
	}
	for _, n := range s.nodes {
		check(n.name+" RSS", ruleRSS, n.rss, 1024, "MiB")
		check(n.name+" goroutines", ruleCount, n.goroutines, 1, "")
		check(n.name+" open files", ruleCount, n.fds, 1, "")
		if s.redis == nil {
			check(n.name+" store file", ruleBytes, n.size, 1<<20, "MiB")
		}
	}
	check("records", ruleRecords, s.nodes[0].records, 1, "")
	if s.redis != nil {
		check("Redis used_memory", ruleBytes, s.redisUsed, 1<<20, "MiB")
	}
	if err := errors.Join(problems...); err != nil {
		r.printf("  FAILED\n")
		b.Error(err)
	}
}

func peak(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
