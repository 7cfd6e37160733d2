package store_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/store"
	"github.com/sipwake/sipwake/internal/store/storetest"
)

// TestRedisSuite holds the Redis backend to the behaviour the bbolt one
// passes. One redis-server serves the suite; each case gets a fresh store
// under its own key prefix.
func TestRedisSuite(t *testing.T) {
	storetest.Run(t, redisStores(store.RedisOptions{Addrs: []string{peertest.StartRedis(t, "")}}, "suite"))
}

// TestRedisSentinelSuite runs the suite through Sentinels, on a primary
// with one replica, waiting for that replica on every acknowledged write:
// every write path the callers are told of then goes through WAIT.
func TestRedisSentinelSuite(t *testing.T) {
	h := peertest.StartRedisHA(t, peertest.RedisHAOptions{Replicas: 1})
	storetest.Run(t, redisStores(store.RedisOptions{Addrs: h.Sentinels, MasterName: h.MasterName, MinReplicas: 1}, "sentinel"))
}

// redisStores gives each test of the suite a store of its own under
// opts, named by a prefix of its own.
func redisStores(opts store.RedisOptions, prefix string) func(t *testing.T) storetest.Opener {
	var n atomic.Int64
	return func(t *testing.T) storetest.Opener {
		opts := opts
		opts.Prefix = fmt.Sprintf("%s%d", prefix, n.Add(1))
		return func(keys *store.Keyring) storetest.Backend {
			r, err := store.OpenRedis(t.Context(), opts, keys, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = r.Close() })
			return r
		}
	}
}

// TestRedisClusterSuite runs the suite through the Cluster client against
// a one-node Redis Cluster that serves all 16384 slots. Cluster mode
// refuses multi-key commands and scripts whose keys span slots (CROSSSLOT),
// so this proves the store keeps every key under its one hash tag.
func TestRedisClusterSuite(t *testing.T) {
	addr := peertest.StartRedis(t, peertest.Addr(t, 1, 7000),
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-announce-ip", peertest.IP(t, 1)) // else CLUSTER SLOTS names no host
	admin := redis.NewClient(&redis.Options{Addr: addr})
	defer admin.Close()
	if err := admin.Do(t.Context(), "CLUSTER", "ADDSLOTSRANGE", 0, 16383).Err(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, _ := admin.ClusterInfo(t.Context()).Result()
		if strings.Contains(info, "cluster_state:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok:\n%s", info)
		}
	}
	// A multi-key command across slots is refused here, as on any cluster.
	if err := admin.MGet(t.Context(), "a", "b").Err(); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("MGET across slots: %v, want CROSSSLOT", err)
	}
	storetest.Run(t, redisStores(store.RedisOptions{Addrs: []string{addr}, Cluster: true}, "cluster"))
}
