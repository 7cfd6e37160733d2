package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Checks of what each backend keeps at rest, shared by bolt_test.go and
// redis_test.go: each of those reaches into its backend's raw storage (a
// file, a Redis) as an attacker or a disk fault would.

// backend is what these checks use of a store.
type backend interface {
	ID(aor, device string) ID
	Put(ctx context.Context, r Record) error
	Get(ctx context.Context, id ID) (Record, error)
	ListAOR(ctx context.Context, aor string) ([]Record, error)
	Scan(ctx context.Context, fn func(Record) error) error
	Delete(ctx context.Context, id ID) (Record, error)
	KeyUsage(ctx context.Context) (map[string]int, error)
}

// What must never be stored in clear.
const (
	secretAOR     = "sip:alice.secret@example.org"
	secretToken   = "7f3c9a1be2d44c0c8f6e5a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
	secretContact = "sip:alice.secret@198.51.100.77:50607;transport=tcp"
)

// putSecrets stores 50 bindings of secretAOR, full of secrets, and returns
// their IDs.
func putSecrets(t *testing.T, b backend) []ID {
	t.Helper()
	var ids []ID
	for i := range 50 {
		dev := fmt.Sprintf("%s-%d", secretToken, i)
		r := Record{
			ID:        b.ID(secretAOR, dev),
			AOR:       secretAOR,
			ExpiresAt: testBase().Add(5 * day),
			Data:      fmt.Appendf(nil, `{"contact":%q,"pn-provider":"apns","pn-prid":"%s-%d","pn-param":"ABCD1234.com.example.voip"}`, secretContact, secretToken, i),
		}
		if err := b.Put(t.Context(), r); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	return ids
}

// leaks lists the secrets of putSecrets that data holds in clear.
func leaks(data string) []string {
	var out []string
	for _, s := range []string{secretAOR, "alice.secret", "alice", secretToken, secretToken[:16], secretContact, "198.51.100.77", "com.example.voip", "pn-prid", "example.org"} {
		if strings.Contains(data, s) {
			out = append(out, s)
		}
	}
	return out
}

// checkWrongKeys: a store sealed under testKeyring(t, "a") opens neither
// under another key id nor under other bytes for "a". open must fail with
// ErrWrongKey, and unchanged fails the test if the refused open changed
// the store.
func checkWrongKeys(t *testing.T, open func(t *testing.T, keys *Keyring) error, unchanged func(t *testing.T)) {
	t.Helper()
	otherBytes, err := NewKeyring("a", map[string][]byte{"a": testKey("not-a")})
	if err != nil {
		t.Fatal(err)
	}
	wrong := map[string]*Keyring{"other key id": testKeyring(t, "b"), "same id, other bytes": otherBytes}
	for name, keys := range wrong {
		t.Run(name, func(t *testing.T) {
			err := open(t, keys)
			if !errors.Is(err, ErrWrongKey) {
				t.Fatalf("open with a wrong key: %v, want ErrWrongKey", err)
			}
			t.Log(err)
			unchanged(t)
		})
	}
}

// tampered are records of one AOR, sealed under key "a", whose stored
// values a test mangles, each in its own way, and one it leaves alone.
type tampered struct{ cipher, header, swapA, swapB, truncated, fine Record }

const tamperedAOR = "sip:alice@x"

func putTampered(t *testing.T, b backend) tampered {
	t.Helper()
	mk := func(dev string) Record {
		return Record{ID: b.ID(tamperedAOR, dev), AOR: tamperedAOR, ExpiresAt: testBase().Add(5 * day), Data: []byte("payload " + dev)}
	}
	tp := tampered{mk("cipher"), mk("header"), mk("swapA"), mk("swapB"), mk("trunc"), mk("fine")}
	for _, r := range append(tp.mangled(), tp.fine) {
		if err := b.Put(t.Context(), r); err != nil {
			t.Fatal(err)
		}
	}
	return tp
}

func (tp tampered) mangled() []Record {
	return []Record{tp.cipher, tp.header, tp.swapA, tp.swapB, tp.truncated}
}

// tamper mangles the stored values through get and set.
func (tp tampered) tamper(get func(ID) []byte, set func(ID, []byte)) {
	flip := func(id ID, i int) {
		v := bytes.Clone(get(id))
		if i < 0 {
			i += len(v)
		}
		v[i] ^= 0x40
		set(id, v)
	}
	flip(tp.cipher.ID, -1) // last byte of the GCM tag
	flip(tp.header.ID, 8)  // expiry: try to dodge the sweeper
	va, vb := bytes.Clone(get(tp.swapA.ID)), bytes.Clone(get(tp.swapB.ID))
	set(tp.swapA.ID, vb)
	set(tp.swapB.ID, va)
	set(tp.truncated.ID, []byte{recFormat, 1, 2})
}

// check: a mangled record does not open (ErrCorrupt) and hides nothing
// else: the untouched one reads back, alone in ListAOR and Scan, and
// KeyUsage still counts what names key "a".
func (tp tampered) check(t *testing.T, b backend) {
	t.Helper()
	ctx := t.Context()
	for _, r := range tp.mangled() {
		if _, err := b.Get(ctx, r.ID); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Get(%s) after tampering: %v, want ErrCorrupt", r.Data, err)
		}
	}
	if got, err := b.Get(ctx, tp.fine.ID); err != nil || string(got.Data) != "payload fine" {
		t.Fatalf("untouched record: %q, %v", got.Data, err)
	}
	list, err := b.ListAOR(ctx, tamperedAOR)
	if err != nil || len(list) != 1 || list[0].ID != tp.fine.ID {
		t.Fatalf("ListAOR skips unreadable records: got %d, %v", len(list), err)
	}
	n := 0
	if err := b.Scan(ctx, func(Record) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("Scan: %d records, %v", n, err)
	}
	if u, err := b.KeyUsage(ctx); err != nil || u["a"] != 5 {
		t.Fatalf("KeyUsage: %v, %v; want a: 5", u, err)
	}
}

// erase: records that cannot be opened can still be erased, and Delete says
// what it erased was unreadable.
func (tp tampered) erase(t *testing.T, b backend) {
	t.Helper()
	ctx := t.Context()
	if _, err := b.Delete(ctx, tp.cipher.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Delete of tampered record: %v, want ErrCorrupt (erased anyway)", err)
	}
	if _, err := b.Get(ctx, tp.cipher.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("tampered record not erased: %v", err)
	}
	if _, err := b.Delete(ctx, tp.truncated.ID); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Delete of truncated record: %v", err)
	}
}
