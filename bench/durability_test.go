package bench

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

var (
	flagKillRate  = flag.Int("kill.rate", 3000, "REGISTER/s of the runs BenchmarkKill9UnderLoad kills sipwake in")
	flagKillAfter = flag.Duration("kill.after", 4*time.Second, "how far into its 8 s run BenchmarkKill9UnderLoad kills sipwake")
)

// The ports sipp registers from: the moved flow's users are registered
// from primePort first, then refresh from killPort, a new contact each.
const (
	primePort = 7000
	killPort  = 7001
)

// BenchmarkKill9UnderLoad kills sipwake (SIGKILL, its whole process group)
// in the middle of an 8 s sipp run at -kill.rate, then opens the store it
// left and looks for every REGISTER sipp got a 200 for: each must be
// there as acknowledged. Two flows, each a durable write per REGISTER:
// first registrations (a new user per REGISTER: a new record) and moved
// refreshes (users registered once from one port refresh from another: a
// changed Contact and flow, which a refresh that changes nothing but the
// time is not). It fails on any acknowledged REGISTER lost.
func BenchmarkKill9UnderLoad(b *testing.B) {
	for _, name := range []string{"first", "moved"} {
		moved := name == "moved"
		b.Run(name, func(b *testing.B) {
			reg := startRegistrar(b, true)
			p := startSipwakeProcessWith(b, reg.Addr, pushtest.NewAPNs(b), filepath.Join(b.TempDir(), "data"), store.NewKey(), nil)
			calls := *flagKillRate * 8
			devs := make([]peertest.SippUser, calls)
			for i := range devs {
				devs[i] = device(i, p.Param)
			}
			if moved {
				primed := registerAll(b, p.Addr, devs, primePort, primeRate*3, "")
				if primed.Successful != calls {
					b.Fatalf("primed %d of %d users", primed.Successful, calls)
				}
			}
			short := filepath.Join(b.TempDir(), "short.log")
			pid := p.cmd.Process.Pid
			killed := time.AfterFunc(*flagKillAfter, func() { _ = syscall.Kill(-pid, syscall.SIGKILL) })
			defer killed.Stop()
			res := registerAll(b, p.Addr, devs, killPort, *flagKillRate, short)
			<-p.done
			acked, err := acknowledgedCalls(short)
			if err != nil {
				b.Fatal(err)
			}
			if len(acked) == 0 || len(acked) >= calls {
				b.Fatalf("%d of %d REGISTERs acknowledged: the kill was not in the middle of the run", len(acked), calls)
			}
			lost := lostAcknowledged(b, p, devs, acked, moved)
			b.Logf("%s at %d/s, SIGKILL after %v: %d acknowledged (sipp: %d successful, %d failed), %d lost",
				name, *flagKillRate, *flagKillAfter, len(acked), res.Successful, res.Failed, lost)
			b.ReportMetric(float64(len(acked)), "acknowledged")
			b.ReportMetric(float64(lost), "lost")
			if lost > 0 {
				b.Errorf("%d acknowledged REGISTERs lost to kill -9", lost)
			}
		})
	}
}

// registerAll registers devs once each, in order, from port at rate; with
// short set, sipp writes its short-message trace there.
func registerAll(b *testing.B, remote string, devs []peertest.SippUser, port, rate int, short string) *peertest.SippResult {
	b.Helper()
	return runRegisters(b, peertest.SippOptions{
		Name: fmt.Sprintf("p%d", port), Scenario: peertest.Scenario(b, "register_push"), Remote: remote, LocalPort: port,
		Calls: len(devs), Rate: float64(rate), Injection: peertest.RegisterInjection(devs...),
		Timeout: time.Duration(len(devs)/rate)*time.Second + 10*time.Second,
	}, short)
}

// acknowledgedCalls reads a sipp -trace_shortmsg file: the call numbers
// (1-based, sipp's [call_number], the start of its default Call-ID) whose
// REGISTER got a 200.
func acknowledgedCalls(path string) ([]int, error) {
	var out []int
	err := readShortMsgs(path, func(m shortMsg) {
		if m.Sent || !strings.HasPrefix(m.FirstLine, "SIP/2.0 200") {
			return
		}
		num, _, _ := strings.Cut(m.CallID, "-")
		if n, err := strconv.Atoi(num); err == nil {
			out = append(out, n)
		}
	})
	return out, err
}

// lostAcknowledged opens the store sipwake left and counts the
// acknowledged calls whose device is not stored as its REGISTER said:
// stored, and, for a moved refresh, with the Contact of the port it moved
// to. Call number n registered devs[n-1] (a sequential injection).
func lostAcknowledged(b *testing.B, p *sipwakeProcess, devs []peertest.SippUser, acked []int, moved bool) int {
	b.Helper()
	st := p.openStore(b)
	defer st.Close()
	rl := relay.New(st, nil, relay.Options{RecordTTL: 120 * time.Hour, Providers: []string{"apns"}}, slog.New(slog.DiscardHandler), time.Now)
	movedTo := fmt.Sprintf(":%d;", killPort)
	lost := 0
	for _, n := range acked {
		d := devs[n-1]
		bs, err := rl.Bindings(context.Background(), relay.AOR(d.User+"@"+d.Domain))
		if err != nil {
			b.Fatalf("read %s: %v", d.User, err)
		}
		found := false
		for _, bd := range bs {
			found = found || bd.Device.Token == d.PRID && (!moved || strings.Contains(bd.Contact, movedTo))
		}
		if !found {
			lost++
			if lost <= 5 {
				b.Logf("acknowledged REGISTER %d of %s is not stored as acknowledged (%d bindings of the AOR)", n, d.User, len(bs))
			}
		}
	}
	return lost
}
