package store

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/peertest"
)

// benchRedis starts a redis-server on loopback TCP (an explicit 127.x.y.1
// address, as peertest derives it): what a sipwake node next to its Redis
// sees, minus the network.
func benchRedis(b *testing.B) string {
	return peertest.StartRedis(b, peertest.Addr(b, 1, 6379))
}

// BenchmarkRedisPut writes records from several writers at once; each Put
// is one EVALSHA round trip (seal, then SET PXAT + ZADD + SADD in a script).
func BenchmarkRedisPut(b *testing.B) {
	addr := benchRedis(b)
	for _, writers := range []int{1, 16, 128} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			benchPuts(b, openRedisAt(b, addr, fmt.Sprintf("bput%d", writers), testKeyring(b, "a"), 0), writers)
		})
	}
}

// BenchmarkRedisGet reads random records of 10,000 from parallel readers
// (8 × GOMAXPROCS goroutines); each Get is one GET and an AES-GCM open.
func BenchmarkRedisGet(b *testing.B) {
	addr := benchRedis(b)
	b.Run("readers=8xGOMAXPROCS", func(b *testing.B) {
		st := openRedisAt(b, addr, "bget", testKeyring(b, "a"), 0)
		ids := make([]ID, 10000)
		putAll(b, st, len(ids), 16, func(i int) Record {
			aor := fmt.Sprintf("sip:user%d@example.com", i/2)
			r := Record{ID: st.ID(aor, fmt.Sprint("dev", i%2)), AOR: aor, ExpiresAt: testBase().Add(3 * day), Data: bindingJSON(i)}
			ids[i] = r.ID
			return r
		})
		b.SetParallelism(8) // a node serves many SIP transactions at once
		benchGets(b, st, ids)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "gets/s")
	})
}

// BenchmarkRedis100k writes 100,000 bindings (two devices per AOR, the
// relay-shaped payload) from 256 writers, then sweeps them all, and reports
// Redis' memory per record. Run with -benchtime=1x; -short skips it.
func BenchmarkRedis100k(b *testing.B) {
	if testing.Short() {
		b.Skip("writes 100k records")
	}
	const n = n100k
	addr := benchRedis(b)
	raw := rawRedis(b, addr)
	for i := range b.N {
		st := openRedisAt(b, addr, fmt.Sprint("b100k-", i), testKeyring(b, "a"), 0)
		ctx := b.Context()
		before := usedMemory(b, raw)
		exp := time.Now().Add(5 * day)
		took := put100k(b, st, exp)
		if c, err := st.Count(ctx); err != nil || c != n {
			b.Fatalf("Count = %d, %v", c, err)
		}
		used := usedMemory(b, raw) - before
		sstart := time.Now()
		seen := 0
		if err := st.Scan(ctx, func(Record) error { seen++; return nil }); err != nil || seen != n {
			b.Fatalf("Scan saw %d, %v", seen, err)
		}
		scan := time.Since(sstart)
		tstart := time.Now()
		taken := 0
		for {
			rs, err := st.TakeExpired(ctx, exp.Add(time.Hour), SweepBatch)
			if err != nil {
				b.Fatal(err)
			}
			if len(rs) == 0 {
				break
			}
			taken += len(rs)
		}
		if taken != n {
			b.Fatalf("took %d of %d", taken, n)
		}
		b.ReportMetric(float64(n)/took.Seconds(), "put-records/s")
		b.ReportMetric(float64(n)/scan.Seconds(), "scan-records/s")
		b.ReportMetric(float64(n)/time.Since(tstart).Seconds(), "sweep-records/s")
		b.ReportMetric(float64(used)/n, "redis-B/record")
		b.ReportMetric(float64(len(bindingJSON(n/2))), "payload-B")
	}
}

func usedMemory(tb testing.TB, c *redis.Client) int64 {
	tb.Helper()
	n, err := strconv.ParseInt(redisInfo(tb, c, "memory", "used_memory"), 10, 64)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
