package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	bolt "go.etcd.io/bbolt"

	"github.com/sipwake/sipwake/internal/peertest"
)

// toV1 rewrites a record value as format 1 wrote it: same seal, the short
// header, no due time or flags.
func toV1(t *testing.T, codec *codec, id ID, v []byte) []byte {
	t.Helper()
	r, err := codec.open(rawRecord{id: id, val: v})
	if err != nil {
		t.Fatal(err)
	}
	hdr := join([]byte{recFormatV1}, encodeExpiry(r.ExpiresAt), codec.aorHash(r.AOR))
	plain := append(binary.AppendUvarint(nil, uint64(len(r.AOR))), r.AOR...)
	sealed, err := codec.keys.Seal(append(plain, r.Data...), recAAD(id, hdr))
	if err != nil {
		t.Fatal(err)
	}
	return join(hdr, sealed)
}

// migrationRecords are put by the new code, then turned into format 1.
func migrationRecords(id func(aor, device string) ID) []Record {
	var out []Record
	for i := range 300 { // more than one scan chunk
		aor := fmt.Sprintf("sip:user%d@example.com", i%40)
		out = append(out, Record{ID: id(aor, fmt.Sprint("dev", i)), AOR: aor,
			ExpiresAt: testBase().Add(3*day + time.Duration(i)*time.Minute), Data: fmt.Appendf(nil, `{"n":%d}`, i)})
	}
	return out
}

type migrated interface {
	Put(ctx context.Context, r Record) error
	Get(ctx context.Context, id ID) (Record, error)
	ListAOR(ctx context.Context, aor string) ([]Record, error)
	ScanDue(ctx context.Context, until time.Time, fn func(Record) error) error
	ScanAccounts(ctx context.Context, fn func(Record) error) error
	Count(ctx context.Context) (int, error)
}

func scanIDs(t *testing.T, scan func(func(Record) error) error) []ID {
	t.Helper()
	var ids []ID
	if err := scan(func(r Record) error { ids = append(ids, r.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	return sortIDs(ids)
}

// checkMigrated: every format 1 record reads back whole, sits in both new
// indexes until it is written again, and leaves them when it is.
func checkMigrated(t *testing.T, st migrated, want []Record) {
	t.Helper()
	ctx := t.Context()
	var ids []ID
	for _, w := range want {
		ids = append(ids, w.ID)
		got, err := st.Get(ctx, w.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.AOR != w.AOR || !got.ExpiresAt.Equal(w.ExpiresAt) || string(got.Data) != string(w.Data) {
			t.Fatalf("migrated %s: got %q %v %q, want %q %v %q", w.ID, got.AOR, got.ExpiresAt, got.Data, w.AOR, w.ExpiresAt, w.Data)
		}
		if !got.Account || !got.DueAt.Equal(time.Unix(0, 0)) {
			t.Fatalf("format 1 record %s: Account %v, DueAt %v; want true, the epoch", w.ID, got.Account, got.DueAt)
		}
	}
	ids = sortIDs(ids)
	checkAORs(t, st, want)
	due := func(fn func(Record) error) error { return st.ScanDue(ctx, testBase(), fn) }
	if got := scanIDs(t, due); !slices.Equal(got, ids) {
		t.Fatalf("ScanDue after migration: %d records, want all %d", len(got), len(ids))
	}
	accounts := func(fn func(Record) error) error { return st.ScanAccounts(ctx, fn) }
	if got := scanIDs(t, accounts); !slices.Equal(got, ids) {
		t.Fatalf("ScanAccounts after migration: %d records, want all %d", len(got), len(ids))
	}
	for _, w := range want[1:] {
		if err := st.Put(ctx, w); err != nil { // rewritten: plain binding, nothing due
			t.Fatal(err)
		}
	}
	first := []ID{want[0].ID}
	if got := scanIDs(t, due); !slices.Equal(got, first) {
		t.Fatalf("ScanDue after rewriting all but one: %v, want %v", got, first)
	}
	if got := scanIDs(t, accounts); !slices.Equal(got, first) {
		t.Fatalf("ScanAccounts after rewriting all but one: %v, want %v", got, first)
	}
	if n, err := st.Count(ctx); err != nil || n != len(want) {
		t.Fatalf("Count = %d, %v; want %d", n, err, len(want))
	}
}

// checkAORs: ListAOR finds every AOR's records of want, and no others.
func checkAORs(t *testing.T, st aorLister, want []Record) {
	t.Helper()
	byAOR := map[string][]ID{}
	for _, w := range want {
		byAOR[w.AOR] = append(byAOR[w.AOR], w.ID)
	}
	for aor, ids := range byAOR {
		if got := listIDs(t, st, aor); !slices.Equal(got, sortIDs(ids)) {
			t.Fatalf("ListAOR(%s) = %v, want %v", aor, got, sortIDs(ids))
		}
	}
}

// aorLister is a store that lists an AOR's records.
type aorLister interface {
	ListAOR(ctx context.Context, aor string) ([]Record, error)
}

// listIDs is what ListAOR(aor) returns, as IDs.
func listIDs(t *testing.T, st aorLister, aor string) []ID {
	t.Helper()
	got, err := st.ListAOR(t.Context(), aor)
	if err != nil {
		t.Fatal(err)
	}
	var ids []ID
	for _, r := range got {
		ids = append(ids, r.ID)
	}
	return ids
}

// putAORBucket writes the on-disk AOR index that formats 1 to 3 kept
// (HMAC(aor) | ID -> "") for records.
func putAORBucket(tx *bolt.Tx, codec *codec, records []Record) error {
	aor, err := tx.CreateBucket([]byte(bucketAOR))
	if err != nil {
		return err
	}
	for _, r := range records {
		if err := aor.Put(join(codec.aorHash(r.AOR), r.ID[:]), nil); err != nil {
			return err
		}
	}
	return nil
}

// toFormat4 turns the format 5 file of tx into what format 4 wrote: the
// records keyed by ID in rec, an AOR index snapshot, format "4".
func toFormat4(tx *bolt.Tx) error {
	rec, err := tx.CreateBucket([]byte(bucketRecV4))
	if err != nil {
		return err
	}
	if err := tx.Bucket([]byte(bucketRec)).ForEach(func(k, v []byte) error {
		_, id, _ := splitRecKey(k)
		return rec.Put(id[:], v)
	}); err != nil {
		return err
	}
	if err := tx.DeleteBucket([]byte(bucketRec)); err != nil {
		return err
	}
	// Format 4's Close left its AOR index snapshot (contents aside).
	if _, err := tx.CreateBucket([]byte(bucketSnapV4)); err != nil {
		return err
	}
	meta := tx.Bucket([]byte(bucketMeta))
	if err := meta.Put([]byte(metaSnapV4), binary.BigEndian.AppendUint64(nil, uint64(tx.ID()))); err != nil {
		return err
	}
	return meta.Put([]byte(metaFormat), []byte(formatV4))
}

// toAORBucket turns the format 5 file of tx, holding records, into one
// that says format and keeps the AOR index on disk, as formats 1 to 3 did
// (format 4's layout otherwise).
func toAORBucket(tx *bolt.Tx, codec *codec, records []Record, format string) error {
	if err := toFormat4(tx); err != nil {
		return err
	}
	if err := putAORBucket(tx, codec, records); err != nil {
		return err
	}
	return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaFormat), []byte(format))
}

// checkFormat5: the file at path says format 5, has no aor or rec bucket
// nor format 4's snapshot, and holds n records in recs, keyed by sequence and ID.
func checkFormat5(t *testing.T, path string, n int) {
	t.Helper()
	fileView(t, path, func(tx *bolt.Tx) error {
		if f := tx.Bucket([]byte(bucketMeta)).Get([]byte(metaFormat)); string(f) != formatV5 {
			t.Errorf("format after migration = %q, want %q", f, formatV5)
		}
		for _, name := range []string{bucketAOR, bucketRecV4, bucketSnapV4} {
			if tx.Bucket([]byte(name)) != nil {
				t.Errorf("the %s bucket is still in the file", name)
			}
		}
		if tx.Bucket([]byte(bucketMeta)).Get([]byte(metaSnapV4)) != nil {
			t.Error("format 4's snapshot transaction is still in the meta bucket")
		}
		keyed := 0
		_ = tx.Bucket([]byte(bucketRec)).ForEach(func(k, _ []byte) error {
			if _, _, ok := splitRecKey(k); ok {
				keyed++
			}
			return nil
		})
		if keyed != n {
			t.Errorf("recs holds %d records keyed by sequence and ID, want %d", keyed, n)
		}
		return nil
	})
}

// A format 3 file (an AOR index on disk) opens as format 5: the bucket is
// gone, and the AOR index in memory finds every record it named.
func TestBoltMigratesFormat3(t *testing.T) {
	t.Parallel()
	path, keys, want, codec := writtenStore(t)
	rawUpdate(t, path, func(tx *bolt.Tx) error { return toAORBucket(tx, codec, want, formatV3) })
	st := openAt(t, path, keys)
	checkAORs(t, st, want)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	checkFormat5(t, path, len(want))
}

// A format 4 file (records keyed by ID) opens as format 5, every record
// readable by ID and by AOR; so does one whose move was cut short (format
// 5 said, part of the records still in rec). Appended records take
// sequences after the moved ones.
func TestBoltMigratesFormat4(t *testing.T) {
	t.Parallel()
	for _, cut := range []bool{false, true} {
		path, keys, want, _ := writtenStore(t)
		rawUpdate(t, path, func(tx *bolt.Tx) error {
			if err := toFormat4(tx); err != nil || !cut {
				return err
			}
			// Half moved, as an interrupted rekeyRecords leaves it.
			old := tx.Bucket([]byte(bucketRecV4))
			recs, err := tx.CreateBucket([]byte(bucketRec))
			if err != nil {
				return err
			}
			for _, r := range want[:len(want)/2] {
				seq, err := recs.NextSequence()
				if err != nil {
					return err
				}
				if err := recs.Put(recKey(seq, r.ID), bytes.Clone(old.Get(r.ID[:]))); err != nil {
					return err
				}
				if err := old.Delete(r.ID[:]); err != nil {
					return err
				}
			}
			return tx.Bucket([]byte(bucketMeta)).Put([]byte(metaFormat), []byte(formatV5))
		})
		st := openAt(t, path, keys)
		for _, w := range want {
			if got, err := st.Get(t.Context(), w.ID); err != nil || string(got.Data) != string(w.Data) {
				t.Fatalf("cut %v: Get after migration: %q, %v; want %q", cut, got.Data, err, w.Data)
			}
		}
		checkAORs(t, st, want)
		extra := Record{ID: st.ID("sip:new@example.com", "d"), AOR: "sip:new@example.com", ExpiresAt: testBase().Add(day), Data: []byte("new")}
		if err := st.Put(t.Context(), extra); err != nil {
			t.Fatal(err)
		}
		if seq := st.mem.seq(extra.ID); seq != uint64(len(want))+1 {
			t.Errorf("cut %v: a record stored after the migration has sequence %d, want %d", cut, seq, len(want)+1)
		}
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
		checkFormat5(t, path, len(want)+1)
	}
}

// writtenStore makes a store with the migrationRecords in it, closed, and
// returns its path, keyring, records and codec.
func writtenStore(t *testing.T) (string, *Keyring, []Record, *codec) {
	t.Helper()
	path := tempDB(t)
	keys := testKeyring(t, "a")
	b := openAt(t, path, keys)
	want := migrationRecords(b.ID)
	for _, r := range want {
		if err := b.Put(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	return path, keys, want, b.codec
}

// rawUpdate runs fn in a write transaction of the bbolt file at path, no
// store open; fileView in a read transaction.
func rawUpdate(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	rawTx(t, path, false, fn)
}

func fileView(t *testing.T, path string, fn func(*bolt.Tx) error) {
	t.Helper()
	rawTx(t, path, true, fn)
}

func rawTx(t *testing.T, path string, readOnly bool, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: readOnly, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if readOnly {
		err = db.View(fn)
	} else {
		err = db.Update(fn)
	}
	if cerr := db.Close(); err != nil || cerr != nil {
		t.Fatal(err, cerr)
	}
}

func TestBoltMigratesFormat1(t *testing.T) {
	t.Parallel() // its own file; fsync-bound, so it overlaps the others
	path, keys, want, codec := writtenStore(t)
	// Turn the file into what format 1 wrote.
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		for _, name := range []string{bucketDue, bucketAcct} {
			if err := tx.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
		if err := toAORBucket(tx, codec, want, formatV1); err != nil {
			return err
		}
		rec := tx.Bucket([]byte(bucketRecV4))
		for _, r := range want {
			if err := rec.Put(r.ID[:], toV1(t, codec, r.ID, rec.Get(r.ID[:]))); err != nil {
				return err
			}
		}
		return nil
	})

	st := openAt(t, path, keys)
	checkMigrated(t, st, want)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// The file now says format 5: a reopen builds nothing again.
	checkFormat5(t, path, len(want))
}

func TestRedisMigratesFormat1(t *testing.T) {
	addr := peertest.StartRedis(t, "")
	keys := testKeyring(t, "a")
	ctx := t.Context()
	s := openRedisAt(t, addr, "v1", keys, 0)
	want := migrationRecords(s.ID)
	for _, r := range want {
		if err := s.Put(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	c := rawRedis(t, addr)
	for _, r := range want {
		v, err := c.Get(ctx, s.recKey(r.ID)).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetArgs(ctx, s.recKey(r.ID), toV1(t, s.codec, r.ID, v), redis.SetArgs{KeepTTL: true}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Del(ctx, s.dueKey, s.acctKey).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, s.metaKey, metaFormat, formatV1).Err(); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()

	checkMigrated(t, openRedisAt(t, addr, "v1", keys, 0), want)
	if f, err := c.HGet(ctx, s.metaKey, metaFormat).Result(); err != nil || f != formatV2 {
		t.Fatalf("format after migration = %q, %v; want %q", f, err, formatV2)
	}
}
