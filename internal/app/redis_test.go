package app_test

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/store"
)

// redisBackend points a world at a private redis-server, sealed with a key
// every node would share.
func redisBackend(t *testing.T) func(*config.Config) {
	return redisAt(peertest.StartRedis(t, ""))
}

// redisAt points a world at the Redis at addr, sealed with a new key every
// node would share.
func redisAt(addr string) func(*config.Config) {
	key := base64.StdEncoding.EncodeToString(store.NewKey())
	return func(c *config.Config) {
		c.Store.Backend = "redis"
		c.Store.Redis.Addrs = []string{addr}
		c.Seal.Key = config.Secret(key)
	}
}

// The whole flow on the Redis backend: register through sipwake, a call
// wakes the sleeping device, it is answered; a restart keeps the binding.
func TestRedisBackendRegisterAndCall(t *testing.T) {
	w := newWorld(t, redisBackend(t))
	tok := w.fakes.APNs.VoIPToken(50)
	w.sleepingDevice("alice", tok, 5070)
	if n := w.records(); n != 1 {
		t.Fatalf("%d records in Redis, want 1", n)
	}
	w.restartWith()
	if bs := w.bindings("alice"); len(bs) != 1 || !strings.HasPrefix(bs[0].Device.Token, tok+":voip&") {
		t.Fatalf("after restart: %+v", bs)
	}
	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	device := w.wake("alice", tok, 5070, "uas_answer")
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "device", device)
}
