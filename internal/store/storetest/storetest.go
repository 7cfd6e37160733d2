// Package storetest holds the behaviour suite every store backend must pass,
// so that the Redis backend is held to the bbolt one's behaviour. It owns no
// backend; each backend's tests call Run with a constructor.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/store"
)

// Backend is what every store backend provides to the relay, the sweeper
// and the operator.
type Backend interface {
	ID(aor, device string) store.ID
	DeriveKey(label string) []byte
	Put(ctx context.Context, r store.Record) error
	Get(ctx context.Context, id store.ID) (store.Record, error)
	ListAOR(ctx context.Context, aor string) ([]store.Record, error)
	Delete(ctx context.Context, id store.ID) (store.Record, error)
	DeleteAOR(ctx context.Context, aor string) ([]store.Record, error)
	TakeExpired(ctx context.Context, now time.Time, limit int) ([]store.Record, error)
	Scan(ctx context.Context, fn func(store.Record) error) error
	ScanDue(ctx context.Context, until time.Time, fn func(store.Record) error) error
	ScanAccounts(ctx context.Context, fn func(store.Record) error) error
	Count(ctx context.Context) (int, error)
	KeyUsage(ctx context.Context) (map[string]int, error)
	Rotate(ctx context.Context) (int, error)
	Close() error
}

// Opener opens one test's store under keys. The first call creates it,
// empty; later calls open the same store again, as a restarted node does.
// It arranges for each Backend it returns to be closed when the test ends
// (t.Cleanup); the suite may close one earlier.
type Opener func(keys *store.Keyring) Backend

// base is the fixed "now" the suite's records are made at; expiry is tested
// by passing later times to TakeExpired, never by waiting.
func base() time.Time { return time.Date(2031, 3, 14, 15, 9, 26, 535897932, time.UTC) }

const day = 24 * time.Hour

// Run runs the suite. newStore is called once per test, and returns the
// Opener of a store of the test's own.
func Run(t *testing.T, newStore func(t *testing.T) Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"IDs", fresh(testIDs)},
		{"DeriveKey", fresh(testDeriveKey)},
		{"PutGet", fresh(testPutGet)},
		{"Replace", fresh(testReplace)},
		{"ListAOR", fresh(testListAOR)},
		{"Delete", fresh(testDelete)},
		{"DeleteAOR", fresh(testDeleteAOR)},
		{"TakeExpired", fresh(testTakeExpired)},
		{"TakeExpiredLimit", fresh(testTakeExpiredLimit)},
		{"Scan", fresh(testScan)},
		{"ScanDue", fresh(testScanDue)},
		{"ScanDueRewrite", fresh(testScanDueRewrite)},
		{"ScanAccounts", fresh(testScanAccounts)},
		{"InvalidRecords", fresh(testInvalid)},
		{"CanceledContext", fresh(testCanceled)},
		{"ConcurrentPut", fresh(testConcurrentPut)},
		{"Restart", testRestart},
		{"Rotate", testRotate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

// fresh runs a test that needs one store, open under one key.
func fresh(fn func(t *testing.T, b Backend)) func(t *testing.T, open Opener) {
	return func(t *testing.T, open Opener) {
		fn(t, open(keyring(t, "k1", map[string][]byte{"k1": store.NewKey()})))
	}
}

func keyring(t *testing.T, active string, keys map[string][]byte) *store.Keyring {
	t.Helper()
	k, err := store.NewKeyring(active, keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func closeStore(t *testing.T, b Backend) {
	t.Helper()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func rec(b Backend, aor, device string, ttl time.Duration, data string) store.Record {
	return store.Record{ID: b.ID(aor, device), AOR: aor, ExpiresAt: base().Add(ttl), Data: []byte(data)}
}

func put(t *testing.T, b Backend, rs ...store.Record) {
	t.Helper()
	for _, r := range rs {
		if err := b.Put(t.Context(), r); err != nil {
			t.Fatalf("Put(%s): %v", r.ID, err)
		}
	}
}

// putParallel writes many records from several goroutines: durable backends
// group concurrent writes into one commit, so this stays fast.
func putParallel(t *testing.T, b Backend, rs []store.Record) {
	t.Helper()
	const workers = 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(rs); i += workers {
				if err := b.Put(t.Context(), rs[i]); err != nil {
					errs <- fmt.Errorf("Put(%s): %w", rs[i].ID, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func same(t *testing.T, got, want store.Record) {
	t.Helper()
	if got.ID != want.ID || got.AOR != want.AOR || !got.ExpiresAt.Equal(want.ExpiresAt) || !bytes.Equal(got.Data, want.Data) {
		t.Fatalf("record:\n got  %s %q %v %q\n want %s %q %v %q", got.ID, got.AOR, got.ExpiresAt, got.Data, want.ID, want.AOR, want.ExpiresAt, want.Data)
	}
}

func ids(rs []store.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.ID.String()
	}
	slices.Sort(out)
	return out
}

func wantIDs(t *testing.T, what string, got []store.Record, want ...store.Record) {
	t.Helper()
	if g, w := ids(got), ids(want); !slices.Equal(g, w) {
		t.Fatalf("%s: got ids %v, want %v", what, g, w)
	}
}

// take is TakeExpired of every record expired at now.
func take(t *testing.T, b Backend, now time.Time) []store.Record {
	t.Helper()
	got, err := b.TakeExpired(t.Context(), now, 0)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func count(t *testing.T, b Backend, want int) {
	t.Helper()
	n, err := b.Count(t.Context())
	if err != nil || n != want {
		t.Fatalf("Count = %d, %v; want %d", n, err, want)
	}
}

func testIDs(t *testing.T, b Backend) {
	a := b.ID("sip:alice@example.com", "dev1")
	if a.IsZero() {
		t.Fatal("zero ID")
	}
	if b.ID("sip:alice@example.com", "dev1") != a {
		t.Fatal("ID is not deterministic")
	}
	for _, other := range []store.ID{
		b.ID("sip:alice@example.com", "dev2"),
		b.ID("sip:bob@example.com", "dev1"),
		b.ID("sip:alice@example.com", ""),
	} {
		if other == a {
			t.Fatal("distinct bindings share an ID")
		}
	}
	got, err := store.ParseID(a.String())
	if err != nil || got != a {
		t.Fatalf("ParseID(String()) = %s, %v; want %s", got, err, a)
	}
}

// A derived key differs by label and from every ID; testRestart shows it
// is the store's, not the process's.
func testDeriveKey(t *testing.T, b Backend) {
	k := b.DeriveKey("sip flow token v1")
	if len(k) != store.KeySize {
		t.Fatalf("derived key is %d bytes", len(k))
	}
	if bytes.Equal(k, b.DeriveKey("another use")) {
		t.Fatal("two labels derive the same key")
	}
	if id := b.ID("sip flow token v1", ""); bytes.HasPrefix(k, id[:]) {
		t.Fatal("a derived key equals a binding ID")
	}
}

func testPutGet(t *testing.T, b Backend) {
	ctx := t.Context()
	r := rec(b, "sip:alice@example.com", "dev1", 5*day, `{"token":"abc"}`)
	put(t, b, r)
	got, err := b.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	same(t, got, r)

	// Neither the caller's slice nor a returned one aliases the store.
	got.Data[0] = 'X'
	again, err := b.Get(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	same(t, again, r)

	if _, err := b.Get(ctx, b.ID("sip:nobody@example.com", "dev1")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get(absent) err = %v, want ErrNotFound", err)
	}
	count(t, b, 1)
}

func testReplace(t *testing.T, b Backend) {
	ctx := t.Context()
	old := rec(b, "sip:alice@example.com", "dev1", 3*day, "old")
	put(t, b, old)
	updated := old
	updated.ExpiresAt = base().Add(6 * day)
	updated.Data = []byte("new")
	put(t, b, updated)

	got, err := b.Get(ctx, old.ID)
	if err != nil {
		t.Fatal(err)
	}
	same(t, got, updated)
	count(t, b, 1)
	list, err := b.ListAOR(ctx, old.AOR)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "ListAOR after replace", list, updated)

	// The old expiry no longer applies: a refresh must extend the TTL.
	wantIDs(t, "TakeExpired at old expiry", take(t, b, old.ExpiresAt.Add(time.Hour)))
	wantIDs(t, "TakeExpired at new expiry", take(t, b, updated.ExpiresAt), updated)
	count(t, b, 0)
}

func testListAOR(t *testing.T, b Backend) {
	ctx := t.Context()
	alice := []store.Record{
		rec(b, "sip:alice@example.com", "iphone", 5*day, "a1"),
		rec(b, "sip:alice@example.com", "ipad", 4*day, "a2"),
		rec(b, "sip:alice@example.com", "android", 6*day, "a3"),
	}
	bob := rec(b, "sip:bob@example.com", "iphone", 5*day, "b1")
	// An AOR that is a prefix of another must not list the other's records.
	alicePrefix := rec(b, "sip:alice@example.co", "iphone", 5*day, "p1")
	put(t, b, append(slices.Clone(alice), bob, alicePrefix)...)

	got, err := b.ListAOR(ctx, "sip:alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "ListAOR(alice)", got, alice...)
	for _, g := range got {
		for _, w := range alice {
			if g.ID == w.ID {
				same(t, g, w)
			}
		}
	}
	got, err = b.ListAOR(ctx, "sip:bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "ListAOR(bob)", got, bob)
	got, err = b.ListAOR(ctx, "sip:nobody@example.com")
	if err != nil || len(got) != 0 {
		t.Fatalf("ListAOR(unknown) = %d records, %v; want none, nil", len(got), err)
	}
}

func testDelete(t *testing.T, b Backend) {
	ctx := t.Context()
	r := rec(b, "sip:alice@example.com", "iphone", 5*day, "a1")
	keep := rec(b, "sip:alice@example.com", "ipad", 5*day, "a2")
	put(t, b, r, keep)

	gone, err := b.Delete(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	same(t, gone, r)
	if _, err := b.Get(ctx, r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get after Delete err = %v, want ErrNotFound", err)
	}
	if _, err := b.Delete(ctx, r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second Delete err = %v, want ErrNotFound", err)
	}
	list, err := b.ListAOR(ctx, r.AOR)
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "ListAOR after Delete", list, keep)
	wantIDs(t, "TakeExpired after Delete", take(t, b, base().Add(10*day)), keep)
	count(t, b, 0)
}

func testDeleteAOR(t *testing.T, b Backend) {
	ctx := t.Context()
	alice := []store.Record{
		rec(b, "sip:alice@example.com", "iphone", 5*day, "a1"),
		rec(b, "sip:alice@example.com", "ipad", 4*day, "a2"),
	}
	bob := rec(b, "sip:bob@example.com", "iphone", 5*day, "b1")
	put(t, b, append(slices.Clone(alice), bob)...)

	gone, err := b.DeleteAOR(ctx, "sip:alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "DeleteAOR", gone, alice...)
	for _, g := range gone {
		if g.AOR != "sip:alice@example.com" || len(g.Data) == 0 {
			t.Fatalf("DeleteAOR returned %q %q, want the erased content", g.AOR, g.Data)
		}
	}
	for _, r := range alice {
		if _, err := b.Get(ctx, r.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get after DeleteAOR err = %v, want ErrNotFound", err)
		}
	}
	gone, err = b.DeleteAOR(ctx, "sip:alice@example.com")
	if err != nil || len(gone) != 0 {
		t.Fatalf("second DeleteAOR = %d, %v; want none, nil", len(gone), err)
	}
	if _, err := b.Get(ctx, bob.ID); err != nil {
		t.Fatalf("DeleteAOR(alice) touched bob: %v", err)
	}
	count(t, b, 1)
}

func testTakeExpired(t *testing.T, b Backend) {
	ctx := t.Context()
	r3 := rec(b, "sip:alice@example.com", "iphone", 3*day, "3d")
	r5 := rec(b, "sip:alice@example.com", "ipad", 5*day, "5d")
	r6 := rec(b, "sip:bob@example.com", "iphone", 6*day, "6d")
	put(t, b, r5, r6, r3)

	steps := []struct {
		now  time.Time
		want []store.Record
	}{
		{base(), nil},
		{base().Add(3*day - time.Nanosecond), nil},
		{base().Add(3 * day), []store.Record{r3}}, // ExpiresAt <= now
		{base().Add(5*day - time.Nanosecond), nil},
		{base().Add(7 * day), []store.Record{r5, r6}},
		{base().Add(70 * day), nil},
	}
	for _, s := range steps {
		got := take(t, b, s.now)
		wantIDs(t, fmt.Sprintf("TakeExpired(base()+%v)", s.now.Sub(base())), got, s.want...)
		for i, g := range got {
			same(t, g, s.want[i]) // soonest first, full content
		}
	}
	count(t, b, 0)
	if got, _ := b.ListAOR(ctx, "sip:alice@example.com"); len(got) != 0 {
		t.Fatalf("ListAOR after expiry: %d records", len(got))
	}
}

func testTakeExpiredLimit(t *testing.T, b Backend) {
	ctx := t.Context()
	var all []store.Record
	for i := range 7 {
		all = append(all, rec(b, "sip:alice@example.com", fmt.Sprint("dev", i), 3*day+time.Duration(i)*time.Hour, "x"))
	}
	put(t, b, all...)
	var got []store.Record
	for range 4 {
		batch, err := b.TakeExpired(ctx, base().Add(4*day), 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) > 2 {
			t.Fatalf("TakeExpired(limit 2) returned %d", len(batch))
		}
		got = append(got, batch...)
	}
	for i := range got {
		same(t, got[i], all[i]) // in expiry order across batches
	}
	wantIDs(t, "TakeExpired in batches", got, all...)
}

func testScan(t *testing.T, b Backend) {
	ctx := t.Context()
	var want []store.Record
	for i := range 600 { // more than one internal page of a chunked scan
		want = append(want, rec(b, fmt.Sprintf("sip:user%d@example.com", i%50), fmt.Sprint("dev", i), 5*day, fmt.Sprint("data", i)))
	}
	putParallel(t, b, want)
	var got []store.Record
	if err := b.Scan(ctx, func(r store.Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "Scan", got, want...)
	byID := map[store.ID]store.Record{}
	for _, w := range want {
		byID[w.ID] = w
	}
	for _, g := range got {
		same(t, g, byID[g.ID])
	}

	stop := errors.New("stop")
	n := 0
	err := b.Scan(ctx, func(store.Record) error { n++; return stop })
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Scan with failing fn: calls %d, err %v; want 1, stop", n, err)
	}
	count(t, b, len(want))
}

func testInvalid(t *testing.T, b Backend) {
	ctx := t.Context()
	r := rec(b, "sip:alice@example.com", "dev", 5*day, "x")
	noID := r
	noID.ID = store.ID{}
	if err := b.Put(ctx, noID); err == nil {
		t.Error("Put with zero ID succeeded")
	}
	noExpiry := r
	noExpiry.ExpiresAt = time.Time{}
	if err := b.Put(ctx, noExpiry); err == nil {
		t.Error("Put with zero ExpiresAt succeeded")
	}
	count(t, b, 0)
}

func testCanceled(t *testing.T, b Backend) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	r := rec(b, "sip:alice@example.com", "dev", 5*day, "x")
	if err := b.Put(ctx, r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with canceled ctx: %v, want context.Canceled", err)
	}
	if _, err := b.Get(ctx, r.ID); !errors.Is(err, context.Canceled) {
		t.Fatalf("Get with canceled ctx: %v, want context.Canceled", err)
	}
	count(t, b, 0)
}

func testConcurrentPut(t *testing.T, b Backend) {
	const writers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				r := rec(b, fmt.Sprintf("sip:w%d@example.com", w), fmt.Sprint("dev", i), 5*day, "x")
				if err := b.Put(t.Context(), r); err != nil {
					errs <- err
				}
				if _, err := b.Get(t.Context(), r.ID); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	count(t, b, writers*each)
}

// collect runs a scan and returns what it handed out, in its order.
func collect(t *testing.T, scan func(fn func(store.Record) error) error) []store.Record {
	t.Helper()
	var got []store.Record
	if err := scan(func(r store.Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

func due(t *testing.T, b Backend, until time.Time) []store.Record {
	t.Helper()
	return collect(t, func(fn func(store.Record) error) error { return b.ScanDue(t.Context(), until, fn) })
}

func accounts(t *testing.T, b Backend) []store.Record {
	t.Helper()
	return collect(t, func(fn func(store.Record) error) error { return b.ScanAccounts(t.Context(), fn) })
}

// inOrder fails unless got holds exactly want, in want's order.
func inOrder(t *testing.T, what string, got []store.Record, want ...store.Record) {
	t.Helper()
	g := make([]string, len(got))
	for i, r := range got {
		g[i] = r.ID.String()
	}
	w := make([]string, len(want))
	for i, r := range want {
		w[i] = r.ID.String()
	}
	if !slices.Equal(g, w) {
		t.Fatalf("%s: got %v, want %v", what, g, w)
	}
}

func withDue(r store.Record, at time.Time) store.Record {
	r.DueAt = at
	return r
}

func testScanDue(t *testing.T, b Backend) {
	ctx := t.Context()
	at := base().Add(time.Hour)
	soon := withDue(rec(b, "sip:alice@example.com", "a", 5*day, "soon"), at.Add(-30*time.Minute))
	exact := withDue(rec(b, "sip:alice@example.com", "b", 5*day, "exact"), at)
	later := withDue(rec(b, "sip:bob@example.com", "c", 5*day, "later"), at.Add(time.Hour))
	never := rec(b, "sip:bob@example.com", "d", 5*day, "never")
	put(t, b, later, never, exact, soon)

	got := due(t, b, at)
	inOrder(t, "ScanDue(at)", got, soon, exact)
	same(t, got[0], soon)
	if !got[1].DueAt.Equal(at) {
		t.Fatalf("DueAt = %v, want %v", got[1].DueAt, at)
	}
	// Nanosecond-exact at the edge, like TakeExpired.
	inOrder(t, "ScanDue(at-1ns)", due(t, b, at.Add(-time.Nanosecond)), soon)
	inOrder(t, "ScanDue(+1 day)", due(t, b, at.Add(day)), soon, exact, later)
	if r, err := b.Get(ctx, never.ID); err != nil || !r.DueAt.IsZero() {
		t.Fatalf("Get(never) = %v, %v; want zero DueAt", r.DueAt, err)
	}

	// A Put moves the record in the index, or takes it out.
	put(t, b, withDue(soon, at.Add(2*time.Hour)), withDue(exact, time.Time{}))
	inOrder(t, "after re-Put", due(t, b, at.Add(day)), later, soon)

	// Every erasure takes the record out of the index.
	if _, err := b.Delete(ctx, later.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.DeleteAOR(ctx, "sip:alice@example.com"); err != nil {
		t.Fatal(err)
	}
	inOrder(t, "after deletes", due(t, b, at.Add(day)))
	expiring := withDue(rec(b, "sip:carol@example.com", "e", time.Hour, "x"), at)
	put(t, b, expiring)
	take(t, b, base().Add(2*time.Hour))
	inOrder(t, "after TakeExpired", due(t, b, at.Add(day)))

	bad := withDue(rec(b, "sip:carol@example.com", "f", day, "x"), time.Unix(-1, 0))
	if err := b.Put(ctx, bad); err == nil {
		t.Error("Put with DueAt before 1970 succeeded")
	}
}

// testScanDueRewrite: the relay's wake-ups re-Put each due record with a later due
// time while the scan runs; the scan hands out every due record once.
func testScanDueRewrite(t *testing.T, b Backend) {
	ctx := t.Context()
	var want []store.Record
	for i := range 600 { // more than one chunk
		r := rec(b, fmt.Sprintf("sip:user%d@example.com", i), "dev", 5*day, fmt.Sprint(i))
		want = append(want, withDue(r, base().Add(time.Duration(i)*time.Second)))
	}
	putParallel(t, b, want)
	now := base().Add(time.Hour)
	seen := map[store.ID]int{}
	var order []store.Record
	err := b.ScanDue(ctx, now, func(r store.Record) error {
		seen[r.ID]++
		order = append(order, r)
		return b.Put(ctx, withDue(r, now.Add(time.Hour)))
	})
	if err != nil {
		t.Fatal(err)
	}
	inOrder(t, "ScanDue while re-putting", order, want...)
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("%s handed out %d times", id, n)
		}
	}
	inOrder(t, "ScanDue after the rewrite", due(t, b, now))
	count(t, b, len(want))
}

func testScanAccounts(t *testing.T, b Backend) {
	ctx := t.Context()
	acct := func(r store.Record) store.Record { r.Account = true; return r }
	a1 := acct(rec(b, "sip:alice@example.com", "acct1", 5*day, "a1"))
	a2 := acct(rec(b, "sip:bob@example.com", "acct2", 5*day, "a2"))
	plain := rec(b, "sip:alice@example.com", "dev", 5*day, "p")
	put(t, b, a1, plain, a2)

	got := accounts(t, b)
	wantIDs(t, "ScanAccounts", got, a1, a2)
	for _, r := range got {
		if !r.Account {
			t.Fatalf("%s: Account false in ScanAccounts", r.ID)
		}
	}
	if r, err := b.Get(ctx, plain.ID); err != nil || r.Account {
		t.Fatalf("Get(plain).Account = %v, %v; want false", r.Account, err)
	}

	a1.Account = false
	put(t, b, a1)
	wantIDs(t, "after re-Put without Account", accounts(t, b), a2)
	if _, err := b.Delete(ctx, a2.ID); err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "after Delete", accounts(t, b))
	a3 := acct(rec(b, "sip:carol@example.com", "acct3", time.Hour, "a3"))
	put(t, b, a3)
	take(t, b, base().Add(2*time.Hour))
	wantIDs(t, "after TakeExpired", accounts(t, b))
}

// testRestart: what a store held, and the IDs and keys it derives, survive
// closing it and opening it again.
func testRestart(t *testing.T, open Opener) {
	ctx := t.Context()
	keys := keyring(t, "k1", map[string][]byte{"k1": store.NewKey()})
	b := open(keys)
	var want []store.Record
	for i := range 20 {
		want = append(want, rec(b, "sip:alice@example.com", fmt.Sprint("dev", i), 3*day+time.Duration(i)*time.Hour+123456789, fmt.Sprintf(`{"n":%d}`, i)))
	}
	put(t, b, want...)
	derived := b.DeriveKey("sip flow token v1")
	closeStore(t, b)
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := b.Get(ctx, want[0].ID); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}

	b = open(keys)
	if b.ID("sip:alice@example.com", "dev0") != want[0].ID {
		t.Fatal("IDs changed across a restart")
	}
	if !bytes.Equal(b.DeriveKey("sip flow token v1"), derived) {
		t.Fatal("the derived key changed across a restart")
	}
	for _, w := range want {
		got, err := b.Get(ctx, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		same(t, got, w)
	}
	list, err := b.ListAOR(ctx, "sip:alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	wantIDs(t, "ListAOR after restart", list, want...)
	count(t, b, len(want))
	// The TTL index survived too.
	inOrder(t, "TakeExpired after restart", take(t, b, want[5].ExpiresAt), want[:6]...)
}

// testRotate: key rotation as the operator does it (docs/STORE.md). A new
// active key seals what is written next, Rotate re-seals the rest and the
// index key, KeyUsage shows the old key unused, and the store opens
// without it. IDs never change.
func testRotate(t *testing.T, open Opener) {
	ctx := t.Context()
	keyA, keyB := store.NewKey(), store.NewKey()
	b := open(keyring(t, "A", map[string][]byte{"A": keyA}))
	const n = 300 // more than one chunk (a transaction, a round trip) of Rotate
	var rs []store.Record
	for i := range n {
		rs = append(rs, rec(b, fmt.Sprintf("sip:user%d@example.com", i/2), fmt.Sprint("dev", i), 3*day, fmt.Sprint(i)))
	}
	putParallel(t, b, rs)
	closeStore(t, b)

	// Both keys, B active: old records still read, new ones seal under B.
	b = open(keyring(t, "B", map[string][]byte{"A": keyA, "B": keyB}))
	if b.ID("sip:user0@example.com", "dev0") != rs[0].ID {
		t.Fatal("ID changed with a new active key")
	}
	extra := rec(b, "sip:new@example.com", "dev", 5*day, "new")
	put(t, b, extra)
	usage := func(when string, want map[string]int) {
		t.Helper()
		got, err := b.KeyUsage(ctx)
		if err != nil || !maps.Equal(got, want) {
			t.Fatalf("KeyUsage %s = %v, %v; want %v", when, got, err, want)
		}
	}
	usage("before Rotate", map[string]int{"A": n, "B": 1})
	if resealed, err := b.Rotate(ctx); err != nil || resealed != n {
		t.Fatalf("Rotate = %d, %v; want %d", resealed, err, n)
	}
	usage("after Rotate", map[string]int{"A": 0, "B": n + 1}) // A listed, unused
	if resealed, err := b.Rotate(ctx); err != nil || resealed != 0 {
		t.Fatalf("second Rotate = %d, %v; want 0", resealed, err)
	}
	closeStore(t, b)

	// A retired: B alone opens the store (the index key was re-sealed too)
	// and every record.
	b = open(keyring(t, "B", map[string][]byte{"B": keyB}))
	for _, r := range append(rs, extra) {
		got, err := b.Get(ctx, r.ID)
		if err != nil {
			t.Fatalf("Get under B only: %v", err)
		}
		same(t, got, r)
	}
	count(t, b, n+1)
}
