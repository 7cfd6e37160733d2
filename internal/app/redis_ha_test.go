package app_test

import (
	"context"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/app"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/store"
)

// sentinelBackend points a world at the primary h's Sentinels watch,
// waiting for one replica on every write sipwake acknowledges.
func sentinelBackend(h *peertest.RedisHA) func(*config.Config) {
	key := base64.StdEncoding.EncodeToString(store.NewKey())
	return func(c *config.Config) {
		c.Store.Backend = "redis"
		c.Store.Redis.Addrs = h.Sentinels
		c.Store.Redis.MasterName = h.MasterName
		c.Store.Redis.MinReplicas = 1
		c.Store.Redis.ReplicaTimeout = time.Second
		c.Seal.Key = config.Secret(key)
	}
}

// Two nodes on a Redis watched by Sentinels. The phone registered through
// node A; then the primary crashes and a replica is promoted. A call for
// the phone reaches A, which finds the binding on the new primary and
// pushes; the woken phone registers through node B, which stores that on
// the new primary and tells A over its pub/sub; A delivers the call, which
// is answered. A phone registering after the promotion is stored too.
func TestSentinelFailoverKeepsPhonesReachable(t *testing.T) {
	h := peertest.StartRedisHA(t, peertest.RedisHAOptions{Replicas: 2})
	nodes := []string{peertest.IP(t, 2) + "/32", peertest.IP(t, 7) + "/32"}
	w := newWorld(t, sentinelBackend(h), func(c *config.Config) { c.Calls.TrustedSources = nodes })
	b, bAddr := w.node(7)
	tok := w.fakes.APNs.VoIPToken(64)
	w.registerVia(w.swAddr, tok, 5070)

	old := h.KillPrimary(t)
	promoted := h.WaitPromoted(t, old)
	t.Logf("primary %s crashed, %s promoted", old, promoted)

	caller := w.call("alice", "caller_answered", nil)
	waitPushes(t, w.fakes.APNs, 1)
	w.registerVia(bAddr, tok, 5070)
	device := w.answer(5070)
	mustSucceed(t, "caller", caller)
	mustSucceed(t, "device", device)
	if got := metric(t, &world{t: t, sw: b}, "sipwake_calls_total", "delivered"); got != 1 {
		t.Fatalf("node B delivered %v calls, want the one A handed over after the failover", got)
	}

	// A phone whose REGISTER fails retries it; one that fails twice
	// after the promotion is not reachable. The first failure is logged
	// with what sipwake said, so a flaky failover names its cause.
	bobTok := w.fakes.APNs.VoIPToken(65)
	bobParams := ";pn-provider=apns;pn-prid=" + bobTok + ";pn-param=" + w.fakes.APNs.Param()
	if res, err := w.register("bob", bobParams, 600, 5072); err != nil {
		t.Logf("REGISTER after the promotion failed once: %v\n%s\nsipwake's log:\n%s", err, res.Messages(), w.logs.String())
		time.Sleep(time.Second)
		if res, err := w.register("bob", bobParams, 600, 5072); err != nil {
			t.Fatalf("REGISTER after the promotion, retried: %v\n%s", err, res.Messages())
		}
	}
	if bs := w.bindings("bob"); len(bs) != 1 {
		t.Fatalf("bob registered after the promotion: %d bindings, want 1", len(bs))
	}
}

// answer runs the woken device's UAS on port: it answers the call that
// comes to it.
func (w *world) answer(port int) *peertest.Sipp {
	w.t.Helper()
	return peertest.StartSipp(w.t, peertest.SippOptions{
		Name: "uas-answer", Scenario: peertest.Scenario(w.t, "uas_answer"),
		LocalIP: w.deviceIP, LocalPort: port, Timeout: 30 * time.Second,
	})
}

// With min_replicas 1, a REGISTER whose binding no replica confirms in
// time is answered 500, not 200: the phone retries instead of trusting a
// binding a failover could lose. Once the replica runs, it gets its 200.
func TestRegisterRefusedWhenNoReplicaConfirms(t *testing.T) {
	h := peertest.StartRedisHA(t, peertest.RedisHAOptions{Replicas: 1})
	w := newWorld(t, sentinelBackend(h))
	thaw := h.Freeze(t, h.Replicas(t)[0])
	if code := w.registerFinal("alice", w.fakes.APNs.VoIPToken(66), 5070); code != 500 {
		t.Fatalf("REGISTER with the replica frozen: %d, want 500", code)
	}
	if !strings.Contains(w.logs.String(), "replicas") {
		t.Error("the log does not say the replicas did not confirm")
	}
	thaw()
	if code := w.registerFinal("alice", w.fakes.APNs.VoIPToken(67), 5071); code != 200 {
		t.Fatalf("REGISTER with the replica running: %d, want 200", code)
	}
}

// sipwake configured for TLS to Redis starts only when it can trust the
// server and, where Redis asks for one, presents a client certificate Redis
// trusts; otherwise it refuses to start with an error naming the setting
// to fix. Configured without TLS, it refuses a TLS-only Redis, saying so.
func TestRedisTLSAtStartup(t *testing.T) {
	ca := peertest.NewTestCA(t, "redis CA")
	addr := peertest.StartRedisTLS(t, peertest.Addr(t, 1, 6380), ca, true)
	cert, key := ca.IssueFiles(t, "sipwake")
	stranger := peertest.NewTestCA(t, "another CA")
	seal := config.Secret(base64.StdEncoding.EncodeToString(store.NewKey()))
	start := func(mutate func(*config.Redis)) error {
		cfg := config.Default()
		cfg.Store.Backend = "redis"
		cfg.Seal.Key = seal
		cfg.Store.Redis = config.Redis{Addrs: []string{addr}, TLS: true, TLSCAFile: ca.File, TLSCertFile: cert, TLSKeyFile: key}
		mutate(&cfg.Store.Redis)
		return startOnce(cfg)
	}

	if err := start(func(*config.Redis) {}); err != nil {
		t.Fatalf("right CA and client certificate: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*config.Redis)
		want   []string
	}{
		{"wrong CA", func(r *config.Redis) { r.TLSCAFile = stranger.File }, []string{"store.redis.tls_ca_file", "unknown authority"}},
		{"no client certificate", func(r *config.Redis) { r.TLSCertFile, r.TLSKeyFile = "", "" }, []string{"store.redis.tls_cert_file", "certificate required"}},
		{"plain to a TLS-only Redis", func(r *config.Redis) { *r = config.Redis{Addrs: r.Addrs} }, []string{"set store.redis.tls"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := start(tc.mutate)
			if err == nil {
				t.Fatal("sipwake started")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("start-up error %q does not say %q", err, w)
				}
			}
			t.Logf("refused to start: %v", err)
		})
	}
}

// Sentinels that ask for a password: sipwake starts with it from
// store.redis.sentinel_password_file, and refuses to start without it,
// saying the Sentinels asked for authentication.
func TestSentinelPasswordAtStartup(t *testing.T) {
	h := peertest.StartRedisHA(t, peertest.RedisHAOptions{SentinelPassword: "sentinel-Pa55"})
	pwFile := filepath.Join(t.TempDir(), "sentinel.pw")
	if err := os.WriteFile(pwFile, []byte("sentinel-Pa55\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	backend := sentinelBackend(h)
	start := func(file string) error {
		cfg := config.Default()
		backend(&cfg)
		cfg.Store.Redis.SentinelPasswordFile = file
		return startOnce(cfg)
	}
	if err := start(pwFile); err != nil {
		t.Fatalf("with the Sentinels' password: %v", err)
	}
	err := start("")
	if err == nil || !strings.Contains(err.Error(), "sentinels") || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("without the Sentinels' password: %v, want a refusal saying the Sentinels asked for one", err)
	}
	t.Logf("refused to start: %v", err)
}

// startOnce validates cfg and makes a sipwake of it, as start-up does, and
// stops it again; the error is the one an operator would see.
func startOnce(cfg config.Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	a, err := app.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return a.Stop(ctx)
}
