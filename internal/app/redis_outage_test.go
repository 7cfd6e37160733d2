package app_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/config"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// redisTimeout is the tests' store.redis.timeout: short, so that a Redis
// cut off fails each command quickly.
const redisTimeout = 300 * time.Millisecond

// redisLink is a private redis-server on 127.x.y.10:6379 and a relay to it
// on 127.x.y.11:6379, through which a node reaches it: the test takes the
// network away (Down, Pause) and gives it back; Redis and its data stay.
type redisLink struct {
	addr  string // Redis itself
	relay *peertest.TCPRelay
}

func newRedisLink(t *testing.T, extra ...string) *redisLink {
	addr := peertest.StartRedis(t, peertest.Addr(t, 10, 6379), extra...)
	return &redisLink{addr: addr, relay: peertest.StartTCPRelay(t, peertest.Addr(t, 11, 6379), addr)}
}

// backend makes a world's node reach Redis through the relay.
func (l *redisLink) backend() func(*config.Config) {
	at := redisAt(l.relay.Addr())
	return func(c *config.Config) {
		at(c)
		c.Store.Redis.Timeout = redisTimeout
	}
}

// client talks to Redis directly, past the relay.
func (l *redisLink) client(t *testing.T) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: l.addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readyz is the node's /readyz status and body.
func (w *world) readyz() (int, string) {
	w.t.Helper()
	return w.adminDo("GET", "/readyz")
}

// Redis unreachable (connections reset, new ones refused): a push REGISTER
// is answered 500 before it reaches the registrar (the store that cannot
// be read would not take its binding either), /readyz says the store
// fails, the metrics show it, and a call for a phone connected to this node
// still reaches it over its connection. Once Redis is reachable again,
// everything works without a restart.
func TestRedisUnreachableThenBack(t *testing.T) {
	link := newRedisLink(t)
	w := newWorld(t, link.backend(), withAdmin(t))
	w.linphone(w.fakes.APNs.VoIPToken(30)) // alice, connected over TCP
	bob := pushtest.APNsToken(31)
	if code := w.registerFinal("bob", bob, 5070); code != 200 {
		t.Fatalf("registration before the outage: %d", code)
	}

	link.relay.Down()
	refused := pushtest.APNsToken(32)
	if code := w.registerFinal("bob", refused, 5071); code != 500 {
		t.Fatalf("REGISTER while Redis is unreachable: %d, want 500", code)
	}
	code, body := w.readyz()
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"store: `) {
		t.Fatalf("/readyz while Redis is unreachable: %d %s", code, body)
	}
	t.Logf("/readyz: %s", body)
	if up := metric(t, w, "sipwake_store_up", ""); up != 0 {
		t.Fatalf("sipwake_store_up %v while Redis is unreachable", up)
	}
	if n := metric(t, w, "sipwake_store_errors_total", "list_aor"); n < 1 {
		t.Fatalf("sipwake_store_errors_total{op=list_aor} %v after a refused REGISTER", n)
	}
	for _, l := range w.locations("bob") {
		if l.Params["pn-prid"] == refused {
			t.Fatalf("the registrar bound the device sipwake refused: %s", l.Contact)
		}
	}
	if n := metric(t, w, "sipwake_sip_registers_total", "store_failed"); n != 1 {
		t.Fatalf("sipwake_sip_registers_total{outcome=store_failed} %v, want 1", n)
	}
	mustSucceed(t, "call over alice's connection while Redis is unreachable", w.call("alice", "caller_answered", nil))
	if !strings.Contains(w.logs.String(), "calling the device over the connection it holds to this node") {
		t.Fatal("the call did not go over the connection held (no log line says so)")
	}
	if n := len(w.fakes.APNs.Pushes()); n != 0 {
		t.Fatalf("%d pushes for a phone that answered over its connection", n)
	}

	link.relay.Up()
	waitFor(t, func() bool { code, _ := w.readyz(); return code == http.StatusOK }, "/readyz 200 once Redis is back")
	if up := metric(t, w, "sipwake_store_up", ""); up != 1 {
		t.Fatalf("sipwake_store_up %v once Redis is back", up)
	}
	again := pushtest.APNsToken(33)
	if code := w.registerFinal("bob", again, 5072); code != 200 {
		t.Fatalf("REGISTER once Redis is back: %d, want 200", code)
	}
	for prid, want := range map[string]bool{bob: true, refused: false, again: true} {
		if got := w.hasToken("bob", prid); got != want {
			t.Errorf("bob's device %s stored: %v, want %v", prid[len(prid)-6:], got, want)
		}
	}
}

// Redis full (maxmemory reached, noeviction): as with a full disk, a
// REGISTER is answered 500 and never 200 without its record; once memory is
// freed (maxmemory raised) registrations work again without a restart, and
// no acknowledged record was lost.
func TestRedisFullRegistrationsFailCleanly(t *testing.T) {
	link := newRedisLink(t, "--maxmemory", "4mb")
	w := newWorld(t, link.backend())
	rdb := link.client(t)
	w.fullStoreFailsCleanly("redis full", "OOM command not allowed", func() func() {
		stopFilling := keepFull(t, rdb)
		return func() {
			stopFilling()
			if n := metric(t, w, "sipwake_store_errors_total", "put"); n < 1 {
				t.Errorf("sipwake_store_errors_total{op=put} %v after REGISTERs refused", n)
			}
			if up := metric(t, w, "sipwake_store_up", ""); up != 1 {
				t.Errorf("sipwake_store_up %v: a full Redis still answers reads", up)
			}
			if err := rdb.ConfigSet(context.Background(), "maxmemory", "64mb").Err(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// keepFull fills Redis up to its maxmemory and keeps it there (Redis frees
// idle clients' buffers, which would let a few more writes in) until the
// returned func is called.
func keepFull(t *testing.T, rdb *redis.Client) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	fill := func(size int) error {
		for {
			n++
			err := rdb.Set(ctx, fmt.Sprintf("filler:%d", n), strings.Repeat("x", size), 0).Err()
			if err != nil {
				if strings.Contains(err.Error(), "OOM command not allowed") {
					return nil
				}
				return err
			}
		}
	}
	for _, size := range []int{16 << 10, 1 << 10, 64} {
		if err := fill(size); err != nil {
			t.Fatalf("filling Redis: %v", err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			_ = fill(64)
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

// registrarEvent is a REGISTER for the handed-over account as the
// registrar's location table shows it: when it was seen, from which node
// (its User-Agent), in which dialog, and which node held the account's
// lease in Redis right then.
type registrarEvent struct {
	at     time.Time
	ua     string
	callID string
	cseq   int
	holder string
}

// registrarWatch samples Kamailio's location table for alice and the
// account's lease every 100 ms and records every REGISTER accepted.
type registrarWatch struct {
	mu     sync.Mutex
	events []registrarEvent
	stop   func()
}

func (w *world) watchRegistrar(lease func() string) *registrarWatch {
	ctx, cancel := context.WithCancel(context.Background())
	rw := &registrarWatch{}
	done := make(chan struct{})
	rw.stop = func() { cancel(); <-done }
	w.t.Cleanup(rw.stop)
	go func() {
		defer close(done)
		last := 0
		for ctx.Err() == nil {
			ls, err := w.kam.Locations(ctx, "alice@"+domain)
			if err == nil && len(ls) > 0 && ls[0].CSeq != last {
				last = ls[0].CSeq
				if len(ls) != 1 {
					w.t.Errorf("the registrar holds %d contacts for the account: %+v", len(ls), ls)
				}
				rw.mu.Lock()
				rw.events = append(rw.events, registrarEvent{at: time.Now(), ua: ls[0].UserAgent, callID: ls[0].CallID, cseq: ls[0].CSeq, holder: lease()})
				rw.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return rw
}

// since is what was seen at or after t.
func (rw *registrarWatch) since(t time.Time) []registrarEvent {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	var out []registrarEvent
	for _, e := range rw.events {
		if !e.at.Before(t) {
			out = append(out, e)
		}
	}
	return out
}

// A node cut off from Redis (a partition: its connections stay open,
// nothing comes back) while another still reaches it: the cut-off node stops
// refreshing the handed-over account it holds before its lease runs out,
// the other node registers it once the lease has lapsed, in the same
// dialog, and every REGISTER the registrar sees comes from the node holding
// the lease then. When the network is back, the old holder stands by and
// does not refresh the account again.
func TestRedisPartitionedNodeLetsItsAccountGo(t *testing.T) {
	apiAddr := peertest.Addr(t, 6, 8443)
	link := newRedisLink(t)
	w := newWorld(t, link.backend(), func(c *config.Config) {
		c.Cluster.RescanInterval = 200 * time.Millisecond
		c.API.Listen = apiAddr
		c.API.Keys = []api.Key{{App: "phone", SHA256: api.HashKey(apiKey)}}
		c.SIP.UserAgent = "sipwake-a"
	})
	w.cfg.API.Listen = ""
	w.cfg.SIP.UserAgent = "sipwake-b"
	w.cfg.Store.Redis.Addrs = []string{link.addr} // node B reaches Redis directly
	b, _ := w.node(7)
	bw := &world{t: t, sw: b}

	rdb := link.client(t)
	leaseKey := "sipwake:lease:" + w.sw.Relay().AccountID("phone", "phone-1").String()
	lease := func() string { return rdb.Get(context.Background(), leaseKey).Val() }
	body := `{"aor":"alice@` + domain + `","registrar":"sip:` + w.kam.Addr + `","transport":"udp","username":"alice",` +
		`"password":"` + password + `","expires":10,"push":{"provider":"apns","token":"` + pushtest.APNsToken(64) + `","param":"` + w.fakes.APNs.Param() + `"}}`
	if code := putAccount(t, apiAddr, "phone-1", body); code != http.StatusCreated {
		t.Fatalf("PUT answered %d", code)
	}
	watch := w.watchRegistrar(lease)
	waitFor(t, func() bool { return metric(t, bw, "sipwake_upstream_registrations", "standby") == 1 }, "node B standing by for the account")
	nodeA := lease()
	if nodeA == "" {
		t.Fatal("nobody holds the account's lease after the PUT")
	}

	link.relay.Pause()
	cut := time.Now()
	left, err := rdb.PTTL(context.Background(), leaseKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	leaseEnd := time.Now().Add(left)

	// Node B takes over once node A's lease (95% of the 10 s granted) lapses.
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, bw, "sipwake_upstream_registrations", "registered") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("node B did not take the account over")
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, func() bool { return len(watch.since(cut)) > 0 }, "the registrar seeing node B's REGISTER")
	if got := metric(t, w, "sipwake_upstream_registrations", "failed"); got != 1 {
		t.Errorf("node A shows %v accounts failed, want the one it could not refresh", got)
	}

	link.relay.Resume()
	// Node A's next attempt reads the account and finds the lease node B's.
	deadline = time.Now().Add(30 * time.Second)
	for metric(t, w, "sipwake_upstream_registrations", "standby") != 1 {
		if time.Now().After(deadline) {
			t.Fatal("node A did not stand by once Redis was back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Node B refreshes the account (at 80% of the 10 s granted) at least
	// once more with node A back on Redis.
	resumed := time.Now()
	deadline = time.Now().Add(20 * time.Second)
	for len(watch.since(resumed)) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("node B did not refresh the account once node A was back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	watch.stop()

	all := watch.since(time.Time{})
	first := all[0]
	for _, e := range all {
		t.Logf("%s +%v: REGISTER from %s, CSeq %d, lease held by %s", e.at.Format("15:04:05.000"), e.at.Sub(cut).Round(time.Millisecond), e.ua, e.cseq, e.holder)
		if e.callID != first.callID {
			t.Errorf("the account changed dialog: %s then %s", first.callID, e.callID)
		}
	}
	for _, e := range watch.since(cut) {
		if !strings.HasPrefix(e.ua, "sipwake-b") {
			t.Errorf("node A (%s) registered the account after it was cut off from Redis: %+v", nodeA, e)
		}
		if e.holder == nodeA {
			t.Errorf("a REGISTER while node A still held the lease: %+v", e)
		}
		if e.at.Before(leaseEnd) {
			t.Errorf("node B registered %v before node A's lease ran out", leaseEnd.Sub(e.at))
		}
	}
}
