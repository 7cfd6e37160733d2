package handover_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/handover"
	"github.com/sipwake/sipwake/internal/handover/handovertest"
	"github.com/sipwake/sipwake/internal/peertest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

const ttl = 5 * 24 * time.Hour

func ourContact(t *testing.T, bs []peertest.Binding, id store.ID) (peertest.Binding, bool) {
	t.Helper()
	for _, b := range bs {
		if strings.Contains(b.Contact, "sw-"+id.String()+"@") {
			return b, true
		}
	}
	return peertest.Binding{}, false
}

func TestHandRegistersRefreshesAndReleases(t *testing.T) {
	t.Parallel()
	env := handovertest.Start(t)
	k := env.Registrations(t, handover.Options{})
	ctx := context.Background()
	users := handovertest.Users()

	saved, created, err := k.Hand(ctx, env.Account("app1", "acc-1", "alice", users["alice"], 4), ttl)
	if err != nil {
		t.Fatalf("Hand: %v", err)
	}
	if !created || saved.Upstream.Expires != 4 || saved.Upstream.CallID == "" {
		t.Fatalf("Hand: created=%v upstream=%+v", created, saved.Upstream)
	}
	id := env.Relay.AccountID("app1", "acc-1")
	first, ok := ourContact(t, env.Locations(t, "alice"), id)
	if !ok {
		t.Fatalf("registrar holds no sw-%s contact: %+v", id, env.Locations(t, "alice"))
	}
	if st, _ := k.Status(id); st.Phase != handover.PhaseRegistered || st.NextAttempt.After(time.Now().Add(4*time.Second)) {
		t.Fatalf("status %+v", st)
	}

	// Refreshed before the 4 s lapse: same Call-ID, higher CSeq.
	handovertest.Eventually(t, 4*time.Second, "refresh within the granted expiry", func() bool {
		b, ok := ourContact(t, env.Locations(t, "alice"), id)
		return ok && b.CallID == first.CallID && b.CSeq > first.CSeq
	})
	// The registrar holds the refresh as soon as it answers; the registrations
	// write it back after reading that answer.
	var stored relay.Binding
	handovertest.Eventually(t, 2*time.Second, "refresh written back", func() bool {
		stored, err = env.Relay.Binding(ctx, id)
		return err == nil && stored.Upstream.CSeq > saved.Upstream.CSeq
	})
	if !stored.ExpiresAt.Equal(saved.ExpiresAt) {
		t.Fatalf("refresh restarted the record TTL: %v -> %v", saved.ExpiresAt, stored.ExpiresAt)
	}

	// Re-posting the same account refreshes it in place (not created).
	if _, created, err := k.Hand(ctx, env.Account("app1", "acc-1", "alice", users["alice"], 4), ttl); err != nil || created {
		t.Fatalf("second Hand: created=%v err=%v", created, err)
	}
	if n := len(env.Locations(t, "alice")); n != 1 {
		t.Fatalf("re-post left %d contacts, want 1", n)
	}

	start := time.Now()
	if err := k.Release(ctx, "app1", "acc-1"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, ok := ourContact(t, env.Locations(t, "alice"), id); ok {
		t.Fatal("contact still registered after Release")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Release took %v", d)
	}
	if _, err := env.Relay.Binding(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("record after Release: %v", err)
	}
	if err := k.Release(ctx, "app1", "acc-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Release: %v, want ErrNotFound", err)
	}
	if _, ok := k.Status(id); ok {
		t.Fatal("status kept after Release")
	}
}

func TestHandRefusedStoresNothing(t *testing.T) {
	t.Parallel()
	env := handovertest.Start(t)
	k := env.Registrations(t, handover.Options{})
	ctx := context.Background()
	users := handovertest.Users()

	cases := []struct {
		name    string
		user    string
		auth    string
		pass    string
		cause   handover.Cause
		message string
	}{
		{"wrong password", "alice", "alice", "wrong", handover.CauseCredentials, "registrar rejected the credentials (401 Unauthorized)"},
		{"auth user of another AOR", "alice", "bob", users["bob"], handover.CauseCredentials, "registrar rejected the credentials (403 Forbidden Auth ID)"},
		{"unknown user", "mallory", "mallory", "x", handover.CauseCredentials, "registrar rejected the credentials (401 Unauthorized)"},
	}
	for i, c := range cases {
		b := env.Account("app1", "bad", c.user, c.pass, 60)
		b.Account.Username = c.auth
		_, _, err := k.Hand(ctx, b, ttl)
		var herr *handover.Error
		if !errors.As(err, &herr) || herr.Cause != c.cause || err.Error() != c.message {
			t.Errorf("%s: err %v, want %q", c.name, err, c.message)
		}
		if herr != nil && herr.Temporary() {
			t.Errorf("%s: credential refusal reported as temporary", c.name)
		}
		if strings.Contains(err.Error(), c.pass) {
			t.Errorf("%s: error shows the password", c.name)
		}
		_ = i
	}
	if _, err := env.Relay.Binding(ctx, env.Relay.AccountID("app1", "bad")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("refused account stored: %v", err)
	}
	if n, _ := env.Store.Count(ctx); n != 0 {
		t.Fatalf("%d records after refusals", n)
	}
	if bs := env.Locations(t, "alice"); len(bs) != 0 {
		t.Fatalf("registrar holds %+v", bs)
	}

	// A registrar nobody answers on: a timeout, reported as temporary.
	b := env.Account("app1", "bad", "alice", users["alice"], 60)
	b.Account.Registrar = peertest.Addr(t, 9, 5060)
	start := time.Now()
	_, _, err := k.Hand(ctx, b, ttl)
	var herr *handover.Error
	if !errors.As(err, &herr) || !herr.Temporary() {
		t.Fatalf("silent registrar: %v", err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Fatalf("silent registrar took %v", d)
	}
}

func TestHandWithHA1(t *testing.T) {
	t.Parallel()
	env := handovertest.Start(t)
	k := env.Registrations(t, handover.Options{})
	ctx := context.Background()
	b := env.Account("app1", "ha1", "carol", "", 60)
	b.Account.HA1 = handovertest.HA1("carol", handovertest.Users()["carol"])
	if _, _, err := k.Hand(ctx, b, ttl); err != nil {
		t.Fatalf("Hand with HA1: %v", err)
	}
	if _, ok := ourContact(t, env.Locations(t, "carol"), env.Relay.AccountID("app1", "ha1")); !ok {
		t.Fatal("not registered")
	}
	b.Account.HA1 = handovertest.HA1("carol", "wrong")
	if _, _, err := k.Hand(ctx, b, ttl); err == nil || !strings.Contains(err.Error(), "rejected the credentials") {
		t.Fatalf("Hand with wrong HA1: %v", err)
	}
	// The refused re-post left the working registration alone.
	if st, _ := env.Relay.Binding(ctx, env.Relay.AccountID("app1", "ha1")); st.Account.HA1 != handovertest.HA1("carol", handovertest.Users()["carol"]) {
		t.Fatal("refused re-post changed the stored account")
	}
}

func TestRestartResumes(t *testing.T) {
	t.Parallel()
	env := handovertest.Start(t)
	ctx := context.Background()
	k1, err := handover.New(env.Relay, env.Store, handover.Options{ContactFor: env.ContactFor, Timeout: 3 * time.Second}, env.Log)
	if err != nil {
		t.Fatal(err)
	}
	if err := k1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"alice", "bob"} {
		if _, _, err := k1.Hand(ctx, env.Account("app1", "acc-"+u, u, handovertest.Users()[u], 4), ttl); err != nil {
			t.Fatal(err)
		}
	}
	if err := k1.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	before := map[string]peertest.Binding{}
	for _, u := range []string{"alice", "bob"} {
		b, ok := ourContact(t, env.Locations(t, u), env.Relay.AccountID("app1", "acc-"+u))
		if !ok {
			t.Fatalf("%s: Stop un-registered", u)
		}
		before[u] = b
	}

	env.Close(t)
	env.Open(t)
	k2 := env.Registrations(t, handover.Options{})
	for _, u := range []string{"alice", "bob"} {
		id := env.Relay.AccountID("app1", "acc-"+u)
		handovertest.Eventually(t, 5*time.Second, u+" resumed", func() bool {
			_, ok := k2.Status(id)
			return ok
		})
		handovertest.Eventually(t, 5*time.Second, u+" re-registered by the new registrations", func() bool {
			b, ok := ourContact(t, env.Locations(t, u), id)
			return ok && b.CallID == before[u].CallID && b.CSeq > before[u].CSeq
		})
	}
}

func TestExpiredAccountUnregisters(t *testing.T) {
	t.Parallel()
	env := handovertest.Start(t)
	k := env.Registrations(t, handover.Options{})
	ctx := context.Background()
	if _, _, err := k.Hand(ctx, env.Account("app1", "acc", "alice", handovertest.Users()["alice"], 60), ttl); err != nil {
		t.Fatal(err)
	}
	id := env.Relay.AccountID("app1", "acc")
	// What the sweeper does: take the record, then hand it to the hook.
	b, err := env.Relay.EraseAccount(ctx, id, "test expiry")
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Unregister(ctx, b); err != nil {
		t.Fatalf("Unregister: %v", err)
	}
	if bs := env.Locations(t, "alice"); len(bs) != 0 {
		t.Fatalf("still registered: %+v", bs)
	}
	if _, ok := k.Status(id); ok {
		t.Fatal("expired account still kept")
	}
}
