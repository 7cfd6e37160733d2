package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

// openSentinel opens a store on h through its Sentinels, waiting for
// minReplicas replicas on every acknowledged write.
func openSentinel(t *testing.T, h *peertest.RedisHA, minReplicas int, timeout time.Duration) *Redis {
	t.Helper()
	s, err := OpenRedis(t.Context(), RedisOptions{
		Addrs: h.Sentinels, MasterName: h.MasterName, MinReplicas: minReplicas, ReplicaTimeout: timeout,
	}, testKeyring(t, "a"), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func haRecord(s *Redis, i int) Record {
	aor := fmt.Sprintf("sip:user%d@example.com", i)
	return Record{ID: s.ID(aor, "dev"), AOR: aor, ExpiresAt: testBase().Add(3 * day), Data: []byte(fmt.Sprint("binding ", i))}
}

// The primary is killed (SIGKILL, a crash) while a writer keeps writing
// with MinReplicas 1; the Sentinels promote a replica. Every write the
// store acknowledged, before the crash or during the failover, is on the
// new primary; writes that failed meanwhile were reported as errors; and
// writes succeed again once the promoted primary has a replica (the
// second one, re-pointed by the Sentinels), through the same store
// (go-redis follows the Sentinels' switch).
func TestRedisSentinelFailoverKeepsAcknowledgedWrites(t *testing.T) {
	h := peertest.StartRedisHA(t, peertest.RedisHAOptions{Replicas: 2})
	s := openSentinel(t, h, 1, 500*time.Millisecond)
	ctx := t.Context()

	var mu sync.Mutex
	var acked []Record
	failed := 0
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := haRecord(s, i)
			err := s.Put(ctx, r)
			mu.Lock()
			if err == nil {
				acked = append(acked, r)
			} else {
				failed++
			}
			mu.Unlock()
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitUntil(t, "100 writes before the crash", func() bool { return count() >= 100 })
	old := h.KillPrimary(t)
	promoted := h.WaitPromoted(t, old)
	atPromotion := count()
	waitUntil(t, "100 writes acknowledged after the promotion", func() bool { return count() >= atPromotion+100 })
	close(stop)
	<-done

	t.Logf("primary %s -> %s: %d writes acknowledged, %d refused during the failover", old, promoted, len(acked), failed)
	for _, r := range acked {
		got, err := s.Get(ctx, r.ID)
		if err != nil {
			t.Fatalf("acknowledged %s (%s) after the failover: %v", r.ID, r.AOR, err)
		}
		if string(got.Data) != string(r.Data) {
			t.Fatalf("%s: %q, want %q", r.ID, got.Data, r.Data)
		}
	}
	if n, err := s.Count(ctx); err != nil || n < len(acked) {
		t.Fatalf("Count = %d, %v; want at least the %d acknowledged", n, err, len(acked))
	}
}

// With MinReplicas, a write no replica confirms in time is an error
// wrapping ErrNotReplicated (Put, Delete and DeleteAOR), not a success;
// without it the same write is acknowledged at once. Once the replica
// runs again, writes are confirmed again.
func TestRedisWaitRefusesUnreplicatedWrites(t *testing.T) {
	h := peertest.StartRedisHA(t, peertest.RedisHAOptions{Replicas: 1})
	s := openSentinel(t, h, 1, 500*time.Millisecond)
	async := openSentinel(t, h, 0, 0)
	ctx := t.Context()
	kept, erased := haRecord(s, 1), haRecord(s, 2)
	for _, r := range []Record{kept, erased} {
		if err := s.Put(ctx, r); err != nil {
			t.Fatalf("put with the replica running: %v", err)
		}
	}

	thaw := h.Freeze(t, h.Replicas(t)[0])
	if err := s.Put(ctx, haRecord(s, 3)); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("put with the replica frozen: %v, want ErrNotReplicated", err)
	}
	if _, err := s.Delete(ctx, erased.ID); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("delete with the replica frozen: %v, want ErrNotReplicated", err)
	}
	if _, err := s.DeleteAOR(ctx, kept.AOR); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("delete aor with the replica frozen: %v, want ErrNotReplicated", err)
	}
	if err := async.Put(ctx, haRecord(s, 4)); err != nil {
		t.Fatalf("put without waiting, replica frozen: %v", err)
	}

	thaw()
	if err := s.Put(ctx, haRecord(s, 5)); err != nil {
		t.Fatalf("put once the replica runs again: %v", err)
	}
}

// waitUntil polls cond for up to 30 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
