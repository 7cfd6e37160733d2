package api_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/api"
	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
)

// The registrar goes away under a handed-over account: the registrations'
// refreshes fail, the API shows state "failed" with the error and a next
// attempt that backs off, the record is kept; a new PUT answers quickly
// with 502/504 and stores nothing.
func TestRegistrarDownShowsFailedWithBackoff(t *testing.T) {
	env := handovertest.Start(t)
	k := env.Registrations(t, handover.Options{RefreshAt: 0.05, Jitter: 0.01, Timeout: 500 * time.Millisecond,
		RetryMin: 300 * time.Millisecond, RetryMax: 5 * time.Second})
	srv, err := api.New(api.Config{
		Listen:    "127.0.0.1:0",
		Keys:      []api.Key{{App: "app1", SHA256: api.HashKey(key1)}},
		RateLimit: api.RateLimit{PerKey: 1000, PerKeyBurst: 1000, PerSource: 1000, PerSourceBurst: 1000},
	}, env.Relay, k, env.Log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop(context.Background()) })
	f := &fixture{env: env, srv: srv, url: srv.URL()}

	if r := f.put(t, key1, "acc-1", f.account("alice", handovertest.Users()["alice"])); r.status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	env.Kamailio.Stop()

	registration := func() map[string]any {
		r := f.get(t, key1, "acc-1")
		if r.status != http.StatusOK {
			t.Fatalf("GET: %d %s", r.status, r.body)
		}
		reg, _ := r.json(t)["registration"].(map[string]any)
		return reg
	}
	var gaps []time.Duration
	var lastNext time.Time
	handovertest.Eventually(t, 15*time.Second, "three failed refreshes with growing back-off", func() bool {
		reg := registration()
		if reg["state"] != "failed" {
			return false
		}
		if reg["last_error"] == "" || reg["last_error"] == nil {
			t.Fatalf("failed without last_error: %v", reg)
		}
		next, _ := time.Parse(time.RFC3339Nano, reg["next_refresh"].(string))
		if !next.Equal(lastNext) {
			if !lastNext.IsZero() {
				gaps = append(gaps, next.Sub(lastNext))
			}
			lastNext = next
		}
		return len(gaps) >= 2
	})
	st, _ := k.Status(f.env.Relay.AccountID("app1", "acc-1"))
	t.Logf("registrar down: state %s, %d consecutive failures, last error %q, retry gaps %v", st.Phase, st.Failures, st.LastError, gaps)
	if gaps[1] <= gaps[0]*11/10 {
		t.Errorf("retry gaps %v do not back off", gaps)
	}
	if f.records(t) != 1 {
		t.Fatalf("%d records while the registrar is down, want the account kept", f.records(t))
	}

	start := time.Now()
	r := f.put(t, key1, "acc-2", f.account("bob", handovertest.Users()["bob"]))
	if r.status != http.StatusGatewayTimeout && r.status != http.StatusBadGateway {
		t.Fatalf("PUT with the registrar down: %d %s, want 502/504", r.status, r.body)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("PUT with the registrar down took %v", took)
	}
	if f.records(t) != 1 {
		t.Fatal("a PUT the registrar never answered stored a record")
	}
}
