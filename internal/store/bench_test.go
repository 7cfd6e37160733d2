package store

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bindingJSON is a payload shaped like the relay's: contact, flow, push
// target (an FCM-length token), upstream registration state.
func bindingJSON(i int) []byte {
	return fmt.Appendf(nil, `{"contact":"sip:user%d@198.51.100.%d:%d;transport=tcp;pn-provider=fcm","flow":"tcp:198.51.100.%d:%d","push":{"provider":"fcm","token":"f%07dXq9Hn3mZ0pL8kR2vT6yW1cB4dG7jN5sA0eU3iO9uY2tR5wQ8zX1vC4bN7mK0lJ3hG6fD9sA2pO5iU8yT1rE4wQ7-APA91bHk3Lx","app":"com.example.voip"},"upstream":{"registrar":"sip:pbx.example.com","call_id":"a84b4c76e66710%d","cseq":%d,"expires":3600}}`,
		i, i%250, 40000+i%20000, i%250, 40000+i%20000, i, i, i%1000)
}

func BenchmarkSeal(b *testing.B) {
	k := testKeyring(b, "a")
	plain, aad := bindingJSON(1), make([]byte, 64)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Seal(plain, aad); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k := testKeyring(b, "a")
	plain, aad := bindingJSON(1), make([]byte, 64)
	sealed, _ := k.Seal(plain, aad)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := k.Open(sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBoltPutDurable writes records durably (fsync per commit) from
// several writers at once: bbolt's Batch gives them one commit, so records/s
// grows with writers while fsyncs/s stays put.
func BenchmarkBoltPutDurable(b *testing.B) {
	for _, writers := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			benchPuts(b, openAt(b, tempDB(b), testKeyring(b, "a")), writers)
		})
	}
}

// benchPuts puts b.N records, one per AOR, from writers goroutines.
func benchPuts(b *testing.B, st putter, writers int) {
	exp := time.Now().Add(5 * day)
	b.ReportAllocs()
	b.ResetTimer()
	putAll(b, st, b.N, writers, func(i int) Record {
		aor := fmt.Sprintf("sip:user%d@example.com", i)
		return Record{ID: st.ID(aor, "dev"), AOR: aor, ExpiresAt: exp, Data: bindingJSON(i)}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkBoltNewRecords writes new records (new AORs, as first
// registrations are) into a store that holds 100,000 already, from 32
// writers, so commits carry groups of ~32 as under a REGISTER burst. It
// reports the CPU time (user+system, the whole process) and the pages
// bbolt writes per record: every page written is a pwrite and part of an
// fsync (a new record's own lands on the records' last page, format 5).
// -short skips it.
func BenchmarkBoltNewRecords(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 100k records first")
	}
	st := openAt(b, tempDB(b), testKeyring(b, "a"))
	exp := time.Now().Add(5 * day)
	put100k(b, st, exp)
	before, cpu := st.db.Stats(), cpuTime()
	b.ResetTimer()
	putAll(b, st, b.N, 32, func(i int) Record {
		aor := fmt.Sprintf("sip:new%d@example.com", i)
		at := exp.Add(time.Hour + time.Duration(i)*300*time.Microsecond) // ~3,000 a second, as they arrive
		return Record{ID: st.ID(aor, "dev"), AOR: aor, ExpiresAt: at, DueAt: at.Add(-4 * day), Data: bindingJSON(i)}
	})
	b.StopTimer()
	after := st.db.Stats()
	b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/float64(b.N), "cpu-µs/record")
	b.ReportMetric(float64(after.TxStats.GetWrite()-before.TxStats.GetWrite())/float64(b.N), "pages/record")
}

// cpuTime is the process' user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func BenchmarkBoltGet(b *testing.B) {
	st := openAt(b, tempDB(b), testKeyring(b, "a"))
	benchGets(b, st, putMany(b, st, 10000, 0))
}

// benchGets gets random records of ids from parallel readers.
func benchGets(b *testing.B, st interface {
	Get(ctx context.Context, id ID) (Record, error)
}, ids []ID) {
	ctx := b.Context()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
		for pb.Next() {
			if _, err := st.Get(ctx, ids[rng.IntN(len(ids))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// n100k is how many bindings the 100k benchmarks write.
const n100k = 100_000

// put100k puts n100k bindings, two devices per AOR, from 256 writers, and
// returns how long that took.
func put100k(b *testing.B, st putter, exp time.Time) time.Duration {
	return putAll(b, st, n100k, 256, func(i int) Record {
		aor := fmt.Sprintf("sip:user%d@example.com", i/2)
		return Record{ID: st.ID(aor, fmt.Sprint("dev", i%2)), AOR: aor, ExpiresAt: exp.Add(time.Duration(i) * time.Millisecond), Data: bindingJSON(i)}
	})
}

// BenchmarkBolt100k measures the footprint of 100,000 bindings: file bytes
// per record (as written, and after Compact), Go heap and process RSS with
// the store open. Run it with -benchtime=1x; -short skips it.
func BenchmarkBolt100k(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 100k records")
	}
	const n = n100k
	for range b.N {
		st := openAt(b, tempDB(b), testKeyring(b, "a"))
		ctx := b.Context()
		took := put100k(b, st, time.Now().Add(5*day))
		if c, err := st.Count(ctx); err != nil || c != n {
			b.Fatalf("Count = %d, %v", c, err)
		}
		written := st.Size()
		cstart := time.Now()
		if err := st.Compact(ctx); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(time.Since(cstart).Milliseconds()), "compact-ms")
		compacted := st.Size()
		// Touch every record, as a restart resume would.
		seen := 0
		if err := st.Scan(ctx, func(Record) error { seen++; return nil }); err != nil || seen != n {
			b.Fatalf("Scan saw %d, %v", seen, err)
		}
		debug.FreeOSMemory() // steady state: return the write churn to the OS
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		b.ReportMetric(float64(n)/took.Seconds(), "records/s")
		b.ReportMetric(float64(written)/n, "file-B/record")
		b.ReportMetric(float64(compacted)/n, "compacted-B/record")
		b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
		b.ReportMetric(float64(procStatus("VmRSS"))/(1<<20), "rss-MiB")
		b.ReportMetric(float64(procStatus("RssAnon"))/(1<<20), "rss-anon-MiB")
		b.ReportMetric(float64(procStatus("RssFile"))/(1<<20), "rss-file-MiB")
		b.ReportMetric(float64(procStatus("VmHWM"))/(1<<20), "rss-peak-MiB")
		b.ReportMetric(float64(len(bindingJSON(n/2))), "payload-B")
	}
}

// procStatus reads a size field of /proc/self/status (Linux), 0 elsewhere.
// RssFile is mostly the store's mmap; RssAnon the Go heap and runtime.
func procStatus(field string) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkBoltListAOR lists the records of an AOR the store has (two
// devices) and of one it has not: a first registration's read.
func BenchmarkBoltListAOR(b *testing.B) {
	st := openAt(b, tempDB(b), testKeyring(b, "a"))
	putMany(b, st, 10000, 0)
	for _, c := range []struct {
		name, aor string
		want      int
	}{{"stored", "sip:user42@example.com", 2}, {"new", "sip:nobody@example.com", 0}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if rs, err := st.ListAOR(b.Context(), c.aor); err != nil || len(rs) != c.want {
					b.Fatalf("ListAOR(%s) = %d records, %v; want %d", c.aor, len(rs), err, c.want)
				}
			}
		})
	}
}

// BenchmarkID derives a binding ID (a keyed hash), which every REGISTER
// does a few times.
func BenchmarkID(b *testing.B) {
	st := openAt(b, tempDB(b), testKeyring(b, "a"))
	device := "apns:" + strings.Repeat("ab12", 16) + ":voip"
	b.ReportAllocs()
	for b.Loop() {
		_ = st.ID("sip:user42@example.com", device)
	}
}
