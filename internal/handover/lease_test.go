package handover_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/cluster"
	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

// A node cut off from Redis (the connection stays open, nothing comes
// back) cannot confirm its lease when a refresh is due: it sends no
// REGISTER (it fails closed) rather than keep an account another node may
// take over once the lease lapses. When the network is back and that node
// holds the lease, this one stands by and still sends nothing.
func TestUnconfirmedLeaseStopsRefreshes(t *testing.T) {
	t.Parallel()
	redisAddr := peertest.StartRedis(t, peertest.Addr(t, 9, 6379))
	link := peertest.StartTCPRelay(t, peertest.Addr(t, 10, 6379), redisAddr)
	viaLink := redis.NewClient(&redis.Options{
		Addr: link.Addr(), DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond,
		WriteTimeout: 200 * time.Millisecond, ContextTimeoutEnabled: true,
	})
	direct := redis.NewClient(&redis.Options{Addr: redisAddr})
	t.Cleanup(func() { _ = viaLink.Close(); _ = direct.Close() })

	addr := peertest.Addr(t, 1, 5060)
	reg := &scriptedRegistrar{script: []int{200}, granted: 3}
	startScripted(t, addr, reg)
	accts := &memAccounts{m: map[store.ID]relay.Binding{}}
	k := startPolicy(t, accts, handover.Options{Timeout: time.Second, Leases: cluster.NewLeases(viaLink, "t", "node-a")})
	ctx := context.Background()
	if _, _, err := k.Hand(ctx, policyAccount(addr, 3), time.Hour); err != nil {
		t.Fatalf("Hand: %v", err)
	}
	id := accts.AccountID("app", "a")
	if owner, err := direct.Get(ctx, "t:lease:"+id.String()).Result(); err != nil || owner != "node-a" {
		t.Fatalf("lease after Hand: %q %v", owner, err)
	}

	link.Pause()
	sent := len(reg.requests())
	// The refresh is due at 80% of the 3 s granted.
	handovertest.Eventually(t, 6*time.Second, "a refresh refused for want of a lease", func() bool {
		st, _ := k.Status(id)
		return st.Phase == handover.PhaseFailed && strings.Contains(st.LastError, "lease not confirmed")
	})
	if n := len(reg.requests()); n != sent {
		t.Fatalf("%d REGISTERs sent without a confirmed lease", n-sent)
	}

	other := cluster.NewLeases(direct, "t", "node-b")
	handovertest.Eventually(t, 6*time.Second, "node B takes the lapsed lease", func() bool {
		held, _, err := other.Hold(ctx, id, time.Minute)
		return err == nil && held
	})
	link.Resume()
	handovertest.Eventually(t, 6*time.Second, "node A stands by for node B", func() bool {
		st, _ := k.Status(id)
		return st.Phase == handover.PhaseStandby
	})
	if n := len(reg.requests()); n != sent {
		t.Fatalf("%d REGISTERs sent for an account node B holds", n-sent)
	}
}
