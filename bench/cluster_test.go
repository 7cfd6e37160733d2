package bench

import (
	"encoding/base64"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/sip"
	"github.com/sipwake/sipwake/internal/store"
)

// BenchmarkClusterRegisterRate: REGISTER/s through Kamailio's dispatcher to
// one and to three sipwake nodes sharing one Redis (all on this machine's
// two cores, with sipp, two Kamailios and redis-server).
//
//	bash bench/run.sh cluster
func BenchmarkClusterRegisterRate(b *testing.B) {
	var rows []setupResult
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes-%d", n), func(b *testing.B) {
			reg := startRegistrar(b, false)
			redisAddr := peertest.StartRedis(b, "")
			lb := peertest.Addr(b, 30, 5060)
			seal := config.Secret(base64.StdEncoding.EncodeToString(store.NewKey()))
			var nodes []string
			param := ""
			for i := range n {
				cfg, fake := sipwakeConfig(b, reg.Addr)
				addr := peertest.Addr(b, 20+i, 5060)
				cfg.SIP.Listen = sip.Listen{UDP: addr, TCP: addr}
				cfg.SIP.PublicAddress = lb
				cfg.Cluster.NodeAddress = addr
				cfg.Calls.TrustedSources = []string{peertest.IP(b, 30) + "/32"}
				cfg.Store.Backend = "redis"
				cfg.Store.Redis.Addrs = []string{redisAddr}
				cfg.Seal.Key = seal
				if param == "" {
					param = fake.Param()
				}
				startSipwakeInProcess(b, cfg)
				nodes = append(nodes, addr)
			}
			peertest.StartKamailio(b, peertest.KamailioOptions{Addr: lb, Domain: domain, Dispatch: nodes, SharedMemMB: sharedMemMB, PkgMemMB: pkgMemMB, Children: kamailioChildren, MemoryManager: kamailioMemory})
			name := map[int]string{1: "a) 1 sipwake node", 3: "b) 3 sipwake nodes"}[n]
			rows = append(rows, measureWith(b, name, "sipp → dispatcher → sipwake ×n (one Redis) → Kamailio", lb, param, nil, nil))
		})
	}
	table := renderTable(rows)
	fmt.Print(table)
	if *flagTable != "" {
		if err := os.WriteFile(*flagTable, []byte(table), 0o644); err != nil {
			b.Errorf("write table: %v", err)
		}
	}
}

// BenchmarkClusterWakeCalls: woken calls/s completed through Kamailio's
// dispatcher to one and to three sipwake nodes sharing one Redis: the
// devices register and re-register through the dispatcher (so a call
// parked on one node is often released through another).
//
//	bash bench/run.sh cluster-calls
func BenchmarkClusterWakeCalls(b *testing.B) {
	quietSipgo()
	var rows []callRow
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes-%d", n), func(b *testing.B) {
			users := *flagCallUsers
			w := newWakeSetup(b, users, 10*time.Second, true)
			redisAddr := peertest.StartRedis(b, "")
			lb := peertest.Addr(b, 30, 5060)
			seal := config.Secret(base64.StdEncoding.EncodeToString(store.NewKey()))
			trusted := []string{peertest.IP(b, 30) + "/32"}
			for i := range n {
				trusted = append(trusted, peertest.IP(b, 20+i)+"/32")
			}
			var nodes []string
			for i := range n {
				cfg := w.cfg
				addr := peertest.Addr(b, 20+i, 5060)
				cfg.SIP.Listen = sip.Listen{UDP: addr, TCP: addr}
				cfg.SIP.PublicAddress = lb
				cfg.Cluster.NodeAddress = addr
				cfg.Calls.TrustedSources = trusted
				cfg.Store.Backend = "redis"
				cfg.Store.Redis.Addrs = []string{redisAddr}
				cfg.Store.DataDir = b.TempDir()
				cfg.Seal.Key = seal
				startSipwakeInProcess(b, cfg)
				nodes = append(nodes, addr)
			}
			peertest.StartKamailio(b, peertest.KamailioOptions{Addr: lb, Domain: domain, Dispatch: nodes, SharedMemMB: sharedMemMB, PkgMemMB: pkgMemMB, Children: kamailioChildren, MemoryManager: kamailioMemory})
			w.pool = startDevicePool(b, peertest.Addr(b, ipDevice, 5070), lb, w.fake.Param())
			w.pool.RegisterAll(b, users, 32, w.fake.VoIPToken)
			row := callRow{Name: map[int]string{1: "b) 1 sipwake node", 3: "c) 3 sipwake nodes"}[n], Path: "sipp → Kamailio → dispatcher → sipwake ×n (one Redis) → device"}
			c := &caller{b: b, remote: w.reg.Addr, scenario: "caller_inf_answered", inf: calleeInjection(b, 0, users), port: 7000, limit: callLimit}
			measureCalls(b, &row, func(rate int, d time.Duration) callProbe {
				time.Sleep(2 * time.Second) // calls an overloaded run left parked end at calls.wait
				p, _ := c.run(rate, d)
				return callProbe{probe: p}
			})
			rows = append(rows, row)
		})
	}
	table := renderCalls(rows)
	fmt.Print(table)
	if *flagCallTable != "" {
		if err := os.WriteFile(*flagCallTable, []byte(table), 0o644); err != nil {
			b.Errorf("write table: %v", err)
		}
	}
}
