package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

var (
	flagRecords      = flag.Int("records.n", 1_000_000, "scale: bindings written to the store")
	flagRecordWriter = flag.Int("records.writers", 256, "scale: concurrent store.Put callers (the store groups their commits)")
	flagRecordTable  = flag.String("records.table", "", "also write the scale table to this file")
	flagRecordData   = flag.String("records.keep", "", "scale: write the store here and keep it (default: a temp dir)")
)

type recordsResult struct {
	N, Writers                int
	WriteTook                 time.Duration
	FileBytes, CompactedBytes int64
	Clean, Killed             startFigures
	OpenTook, SweepTook       time.Duration
	CompactTook               time.Duration
	Swept                     int
	Pages                     string
}

// startFigures are what one start of cmd/sipwake on the store took and
// held: time to SIP listening and to /readyz 200, RSS at ready, 15 s later
// and at its peak (KiB).
type startFigures struct {
	Listen, Ready                time.Duration
	ReadyRSS, SettledRSS, PeakKB int64
}

// measureStart starts sipwake (spawn) and measures the start; admin is its
// admin listener.
func measureStart(b *testing.B, admin string, spawn func() *sipwakeProcess) (startFigures, *sipwakeProcess) {
	b.Helper()
	var f startFigures
	start := time.Now()
	p := spawn()
	f.Listen = time.Since(start)
	if !waitUntil(120*time.Second, func() bool {
		r, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	}) {
		b.Errorf("/readyz not 200 within 120 s")
	}
	f.Ready = time.Since(start)
	f.ReadyRSS, _ = p.Memory(b)
	time.Sleep(15 * time.Second) // the wake-ups' first pass reads every record
	f.SettledRSS, f.PeakKB = p.Memory(b)
	return f, p
}

// pageUse says where a bbolt file's bytes are: per bucket, bytes in use
// of the pages it holds, and the free pages.
func pageUse(b *testing.B, path string) string {
	b.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var parts []string
	err = db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			st := bk.Stats()
			held := int64(st.LeafPageN+st.BranchPageN) * int64(db.Info().PageSize)
			if held == 0 {
				return nil
			}
			used := int64(st.LeafInuse + st.BranchInuse)
			parts = append(parts, fmt.Sprintf("%s %d/%d MiB (%.0f%%)", name, used>>20, held>>20, 100*float64(used)/float64(held)))
			return nil
		})
	})
	if err != nil {
		b.Fatal(err)
	}
	free := int64(db.Stats().FreePageN+db.Stats().PendingPageN) * int64(db.Info().PageSize)
	return strings.Join(parts, ", ") + fmt.Sprintf("; free pages %d MiB", free>>20)
}

// binding is a relay.Binding as a device registered through sipwake
// leaves it: UDP flow, APNs VoIP token, path mode upstream.
func binding(i int, now time.Time, param string) relay.Binding {
	user := fmt.Sprintf("u%07d", i)
	tok := pushtest.APNsToken(i)
	src := fmt.Sprintf("198.51.%d.%d:%d", (i>>8)&255, i&255, 40000+i%20000)
	contact := "sip:" + user + "@" + src + ";transport=udp;pn-provider=apns;pn-prid=" + tok + ";pn-param=" + param
	return relay.Binding{
		AOR:     relay.AOR(user + "@" + domain),
		Device:  relay.Device{Provider: "apns", Token: tok, Param: param},
		Contact: contact,
		Flow:    relay.Flow{Transport: "udp", Source: src},
		Upstream: relay.UpstreamState{Contact: contact, Path: true, Expires: 3600, RegisteredAt: now,
			CallID: fmt.Sprintf("%016x-%d@bench", i*7919, i), CSeq: 2},
	}
}

// BenchmarkRecords writes -records.n bindings into a bbolt store the way
// sipwake does (relay.Service.Register: encoded, sealed, concurrent writers
// sharing group commits),
// starts cmd/sipwake on it twice, after a clean stop and after a kill -9
// (time to SIP listening and to /readyz 200, RSS)
// and then sweeps them all as expired (TakeExpired in SweepBatch batches,
// then Compact). Run with -benchtime=1x (bench/run.sh records).
func BenchmarkRecords(b *testing.B) {
	quietSipgo()
	n, writers := *flagRecords, *flagRecordWriter
	dir := *flagRecordData
	if dir == "" {
		dir = b.TempDir()
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		b.Fatal(err)
	}
	dbPath := filepath.Join(dataDir, "sipwake.db")
	key := store.NewKey()
	keys, err := store.NewKeyring("k1", map[string][]byte{"k1": key})
	if err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.OpenBolt(dbPath, keys, quiet)
	if err != nil {
		b.Fatal(err)
	}
	fake := pushtest.NewAPNs(b)
	param := fake.Param()
	res := recordsResult{N: n, Writers: writers}

	// Write, as sipwake stores a device's refresh: relay.Service.Register
	// (expiry = now + TTL, due = the next wake-up for it).
	const ttl = 120 * time.Hour
	svc := relay.New(st, nil, relay.Options{RecordTTL: ttl, Providers: []string{"apns"},
		Wakeups: relay.WakeupOptions{Interval: time.Minute, RefreshLead: time.Minute, ExpiryWarnings: []time.Duration{24 * time.Hour, time.Hour}}},
		quiet, time.Now)
	now := time.Now()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if _, err := svc.Register(ctx, binding(i, now, param), nil); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if i%100_000 == 0 && i > 0 {
					b.Logf("%d records written, %.0f/s", i, float64(i)/time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	res.WriteTook = time.Since(start)
	if err, _ := firstErr.Load().(error); err != nil {
		b.Fatalf("put: %v", err)
	}
	if got, err := st.Count(ctx); err != nil || got != n {
		b.Fatalf("count %d (%v), want %d", got, err, n)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	res.FileBytes = fileSize(b, dbPath)
	res.Pages = pageUse(b, dbPath)
	b.Logf("wrote %d records in %v (%.0f/s), file %d MiB", n, res.WriteTook.Round(time.Millisecond),
		float64(n)/res.WriteTook.Seconds(), res.FileBytes>>20)

	// Start the operator's binary on it: after the harness closed the
	// store, and again after a kill -9 of that process (each builds the
	// memory index from the records).
	admin := peertest.Addr(b, ipAdmin, 9060)
	var p *sipwakeProcess
	res.Clean, p = measureStart(b, admin, func() *sipwakeProcess {
		return startSipwakeProcessWith(b, peertest.Addr(b, ipRegistrar, 5060), fake, dataDir, key, map[string]string{
			"SIPWAKE_ADMIN_LISTEN": admin,
		})
	})
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	res.Killed, p = measureStart(b, admin, func() *sipwakeProcess { return p.restart(b) })
	p.stop()

	// Sweep all of them as expired.
	start = time.Now()
	st, err = store.OpenBolt(dbPath, keys, quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	res.OpenTook = time.Since(start)
	start = time.Now()
	for {
		recs, err := st.TakeExpired(ctx, time.Now().Add(ttl+time.Hour), store.SweepBatch)
		if err != nil {
			b.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		res.Swept += len(recs)
	}
	res.SweepTook = time.Since(start)
	start = time.Now()
	if err := st.Compact(ctx); err != nil {
		b.Fatal(err)
	}
	res.CompactTook = time.Since(start)
	res.CompactedBytes = fileSize(b, dbPath)

	table := renderRecords(res)
	fmt.Print(table)
	if *flagRecordTable != "" {
		if err := os.WriteFile(*flagRecordTable, []byte(table), 0o644); err != nil {
			b.Errorf("write table: %v", err)
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(res.Clean.Ready.Seconds(), "s-to-ready")
	b.ReportMetric(res.Killed.Ready.Seconds(), "s-to-ready-after-kill")
}

func fileSize(b *testing.B, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

func renderRecords(r recordsResult) string {
	var s strings.Builder
	mib := func(bytes int64) string { return fmt.Sprintf("%.1f MiB", float64(bytes)/(1<<20)) }
	goal := func(ok bool) string {
		switch {
		case r.N != 1_000_000:
			return "(at 1,000,000)"
		case ok:
			return "met"
		}
		return "MISSED"
	}
	fmt.Fprintf(&s, "\nScale: %d bindings in the bbolt store (%s)\n", r.N, time.Now().Format(time.DateOnly))
	fmt.Fprintf(&s, "%-52s %-26s %s\n", "figure", "value", "goal")
	row := func(k, v, g string) { fmt.Fprintf(&s, "%-52s %-26s %s\n", k, v, g) }
	row(fmt.Sprintf("write, relay Register × %d writers (group commit)", r.Writers),
		fmt.Sprintf("%v (%.0f/s)", r.WriteTook.Round(100*time.Millisecond), float64(r.N)/r.WriteTook.Seconds()), "-")
	row("file size as written", fmt.Sprintf("%s (%d B/record)", mib(r.FileBytes), r.FileBytes/int64(r.N)),
		"≤ 1 GiB: "+goal(r.FileBytes <= 1<<30))
	s.WriteString("  pages (in use / held): " + r.Pages + "\n")
	for _, st := range []struct {
		name string
		f    startFigures
	}{{"after a clean stop", r.Clean}, {"after kill -9", r.Killed}} {
		s.WriteString("start " + st.name + ":\n")
		row("  process start → SIP UDP listening", st.f.Listen.Round(10*time.Millisecond).String(), "-")
		row("  process start → /readyz 200", st.f.Ready.Round(10*time.Millisecond).String(), "≤ 10 s: "+goal(st.f.Ready <= 10*time.Second))
		row("  RSS at ready", mib(st.f.ReadyRSS<<10), "-")
		row("  RSS 15 s later (wake-up pass done)", fmt.Sprintf("%s (peak %s)", mib(st.f.SettledRSS<<10), mib(st.f.PeakKB<<10)),
			"≤ 512 MiB: "+goal(max(st.f.SettledRSS, st.f.PeakKB) <= 512<<10))
	}
	row("OpenBolt (in the harness)", r.OpenTook.Round(time.Millisecond).String(), "-")
	row(fmt.Sprintf("sweep: TakeExpired × %d-record batches", store.SweepBatch),
		fmt.Sprintf("%v for %d (%.0f/s)", r.SweepTook.Round(100*time.Millisecond), r.Swept, float64(r.Swept)/r.SweepTook.Seconds()), "-")
	row("then Compact", fmt.Sprintf("%v → %s", r.CompactTook.Round(10*time.Millisecond), mib(r.CompactedBytes)), "-")
	return s.String()
}
