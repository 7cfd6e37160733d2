package store

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// indexTimes lists the times the entries of a time index (ttl or due)
// hold for id.
func indexTimes(t *testing.T, b *Bolt, index string, id ID) []time.Time {
	t.Helper()
	var out []time.Time
	err := b.withDB(t.Context(), func(db *bolt.DB) error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.Bucket([]byte(index)).ForEach(func(k, _ []byte) error {
				if len(k) == 8+IDSize && bytes.Equal(k[8:], id[:]) {
					out = append(out, decodeExpiry(k[:8]))
				}
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func wantTimes(t *testing.T, what string, got []time.Time, want ...time.Time) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: entries at %v, want %v", what, got, want)
	}
	for i := range got {
		if !got[i].Equal(want[i]) {
			t.Fatalf("%s: entries at %v, want %v", what, got, want)
		}
	}
}

func dueIDs(t *testing.T, b *Bolt, until time.Time) []ID {
	t.Helper()
	var ids []ID
	if err := b.ScanDue(t.Context(), until, func(r Record) error { ids = append(ids, r.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestBoltTimeIndexesAreLowerBounds: a refresh (expiry and due time later)
// writes no ttl or due entry; the sweeper and ScanDue settle an entry they
// reach early, hand out the record at its real time, once, and never erase
// it before its expiry; an entry left by an erased record goes.
func TestBoltTimeIndexesAreLowerBounds(t *testing.T) {
	b := openAt(t, tempDB(t), testKeyring(t, "a"))
	ctx := t.Context()
	t0 := testBase()
	r := Record{ID: b.ID("sip:alice@example.com", "dev"), AOR: "sip:alice@example.com", ExpiresAt: t0.Add(3 * day), DueAt: t0.Add(2 * day), Data: []byte("v1")}
	put := func(r Record) {
		t.Helper()
		if err := b.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	put(r)

	// Refreshed an hour later: the entries stay where they were.
	r.ExpiresAt, r.DueAt, r.Data = r.ExpiresAt.Add(time.Hour), r.DueAt.Add(time.Hour), []byte("v2")
	put(r)
	wantTimes(t, "ttl after refresh", indexTimes(t, b, bucketTTL, r.ID), t0.Add(3*day))
	wantTimes(t, "due after refresh", indexTimes(t, b, bucketDue, r.ID), t0.Add(2*day))

	// Reached early, the due entry moves to the record's time; nothing is
	// handed out.
	if ids := dueIDs(t, b, t0.Add(2*day+time.Minute)); len(ids) != 0 {
		t.Fatalf("ScanDue before the due time handed out %v", ids)
	}
	wantTimes(t, "due after an early scan", indexTimes(t, b, bucketDue, r.ID), r.DueAt)
	if ids := dueIDs(t, b, r.DueAt); len(ids) != 1 || ids[0] != r.ID {
		t.Fatalf("ScanDue at the due time = %v, want the record once", ids)
	}

	// The sweeper reaching the old expiry keeps the record and moves its
	// entry; at the real expiry it erases it.
	if got, err := b.TakeExpired(ctx, t0.Add(3*day+time.Minute), 0); err != nil || len(got) != 0 {
		t.Fatalf("TakeExpired before the expiry = %d records, %v", len(got), err)
	}
	wantTimes(t, "ttl after an early sweep", indexTimes(t, b, bucketTTL, r.ID), r.ExpiresAt)
	if got, err := b.Get(ctx, r.ID); err != nil || string(got.Data) != "v2" {
		t.Fatalf("record after an early sweep: %v, %v", got, err)
	}
	if got, err := b.TakeExpired(ctx, r.ExpiresAt, 0); err != nil || len(got) != 1 {
		t.Fatalf("TakeExpired at the expiry = %d records, %v", len(got), err)
	}

	// A time that moves earlier is indexed anew; the later entry it leaves
	// does not hand the record out twice and goes when reached.
	q := Record{ID: b.ID("sip:bob@example.com", "dev"), AOR: "sip:bob@example.com", ExpiresAt: t0.Add(3 * day), DueAt: t0.Add(2 * day), Data: []byte("x")}
	put(q)
	q.DueAt = t0.Add(day)
	put(q)
	wantTimes(t, "due moved earlier", indexTimes(t, b, bucketDue, q.ID), q.DueAt)
	if ids := dueIDs(t, b, t0.Add(5*day)); len(ids) != 1 {
		t.Fatalf("ScanDue = %v, want bob once", ids)
	}

	// Refreshed, then erased: the entries the header no longer names go
	// when a scan reaches them.
	q.ExpiresAt, q.DueAt = q.ExpiresAt.Add(time.Hour), q.DueAt.Add(time.Hour)
	put(q)
	if _, err := b.Delete(ctx, q.ID); err != nil {
		t.Fatal(err)
	}
	if ids := dueIDs(t, b, t0.Add(5*day)); len(ids) != 0 {
		t.Fatalf("ScanDue after Delete = %v", ids)
	}
	if got, err := b.TakeExpired(ctx, t0.Add(5*day), 0); err != nil || len(got) != 0 {
		t.Fatalf("TakeExpired after Delete = %d, %v", len(got), err)
	}
	wantTimes(t, "due after Delete", indexTimes(t, b, bucketDue, q.ID))
	wantTimes(t, "ttl after Delete", indexTimes(t, b, bucketTTL, q.ID))
}

// TestBoltScanDueSettlesAcrossChunks: with more early entries than a chunk,
// every record due by until is handed out once, in due order, and every
// record due later is not.
func TestBoltScanDueSettlesAcrossChunks(t *testing.T) {
	t.Parallel() // its own file; fsync-bound, so it overlaps the others
	b := openAt(t, tempDB(t), testKeyring(t, "a"))
	ctx := t.Context()
	t0 := testBase()
	n := 3*chunk + 17
	var recs []Record
	for i := range n {
		aor := fmt.Sprintf("sip:u%d@example.com", i)
		recs = append(recs, Record{ID: b.ID(aor, "d"), AOR: aor, ExpiresAt: t0.Add(5 * day), DueAt: t0.Add(time.Duration(i) * time.Second), Data: []byte("x")})
	}
	putAll := func() {
		t.Helper()
		for _, r := range recs {
			if err := b.Put(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	putAll()
	// Every second record is refreshed past the others: its entry is early.
	for i := range recs {
		if i%2 == 0 {
			recs[i].DueAt = recs[i].DueAt.Add(time.Duration(n) * time.Second)
		}
	}
	putAll()
	until := t0.Add(time.Duration(n+n/2) * time.Second)
	var got []Record
	if err := b.ScanDue(ctx, until, func(r Record) error { got = append(got, r); return nil }); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, r := range recs {
		if !r.DueAt.After(until) {
			want++
		}
	}
	if len(got) != want {
		t.Fatalf("ScanDue handed out %d records, want %d", len(got), want)
	}
	seen := map[ID]bool{}
	for i, r := range got {
		if seen[r.ID] || r.DueAt.After(until) || i > 0 && r.DueAt.Before(got[i-1].DueAt) {
			t.Fatalf("record %d (due %v) repeated, late or out of order", i, r.DueAt)
		}
		seen[r.ID] = true
	}
}

// TestBoltFormat2BecomesFormat4: a format 2 file's exact entries are lower
// bounds already; opening it changes the mark (and moves the AOR index to
// memory: TestBoltMigratesFormat3), which a sipwake that knows format 2
// alone then refuses.
func TestBoltFormat2BecomesFormat5(t *testing.T) {
	path := tempDB(t)
	keys := testKeyring(t, "a")
	b := openAt(t, path, keys)
	r := Record{ID: b.ID("sip:alice@example.com", "dev"), AOR: "sip:alice@example.com", ExpiresAt: testBase().Add(3 * day), Data: []byte("x")}
	if err := b.Put(t.Context(), r); err != nil {
		t.Fatal(err)
	}
	format := func(set string) string {
		t.Helper()
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var got string
		err = db.Update(func(tx *bolt.Tx) error {
			meta := tx.Bucket([]byte(bucketMeta))
			if set != "" {
				return meta.Put([]byte(metaFormat), []byte(set))
			}
			got = string(meta.Get([]byte(metaFormat)))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if f := format(""); f != formatV5 {
		t.Fatalf("new file is format %q, want %q", f, formatV5)
	}
	rawUpdate(t, path, toFormat4)
	format(formatV2)
	b = openAt(t, path, keys)
	if got, err := b.Get(t.Context(), r.ID); err != nil || string(got.Data) != "x" {
		t.Fatalf("record in the format 2 file: %v, %v", got, err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if f := format(""); f != formatV5 {
		t.Fatalf("format 2 file after open is format %q, want %q", f, formatV5)
	}
}
