package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/cluster"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

func client(t *testing.T) redis.UniversalClient {
	t.Helper()
	addr := peertest.StartRedis(t, "")
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestLeaseOneNodeAtATime(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	a, b := cluster.NewLeases(c, "t", "node-a:5060"), cluster.NewLeases(c, "t", "node-b:5060")
	var id store.ID
	id[0] = 1
	if held, _, err := a.Hold(ctx, id, 300*time.Millisecond); err != nil || !held {
		t.Fatalf("A could not take a free lease: %v %v", held, err)
	}
	held, left, err := b.Hold(ctx, id, time.Second)
	if err != nil || held || left <= 0 || left > 300*time.Millisecond {
		t.Fatalf("B took A's lease: held=%v left=%v err=%v", held, left, err)
	}
	if held, _, _ := a.Hold(ctx, id, 300*time.Millisecond); !held {
		t.Fatal("A could not extend its own lease")
	}
	if err := b.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := b.Hold(ctx, id, time.Second); held {
		t.Fatal("B's release freed A's lease")
	}
	time.Sleep(400 * time.Millisecond) // A died: its lease lapses
	if held, _, _ := b.Hold(ctx, id, time.Second); !held {
		t.Fatal("B could not take over a lapsed lease")
	}
	if err := b.Release(ctx, id); err != nil {
		t.Fatal(err)
	}
	if held, _, _ := a.Hold(ctx, id, time.Second); !held {
		t.Fatal("a released lease was not free")
	}
}

func TestBusCarriesRefreshes(t *testing.T) {
	c := client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []relay.Refresh
	sub := cluster.New(c, "t", nil)
	if err := sub.Run(ctx, func(_ context.Context, r relay.Refresh) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r)
	}); err != nil {
		t.Fatal(err)
	}
	var id store.ID
	id[3] = 7
	want := relay.Refresh{Waiter: id, Record: store.ID{9}}
	if err := cluster.New(c, "t", nil).Publish(ctx, want); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("refresh not delivered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got[0] != want {
		t.Fatalf("delivered %v, want %v", got[0], want)
	}
}
