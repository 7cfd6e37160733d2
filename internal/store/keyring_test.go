package store

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	key := testKey("a")
	tests := []struct {
		name, in string
		ok       bool
		errHas   string
	}{
		{"std padded", base64.StdEncoding.EncodeToString(key), true, ""},
		{"std raw", base64.RawStdEncoding.EncodeToString(key), true, ""},
		{"url padded", base64.URLEncoding.EncodeToString(key), true, ""},
		{"url raw", base64.RawURLEncoding.EncodeToString(key), true, ""},
		{"trailing newline", base64.StdEncoding.EncodeToString(key) + "\n", true, ""},
		{"empty", "", false, "empty"},
		{"short", base64.StdEncoding.EncodeToString(key[:16]), false, "16 bytes, want 32"},
		{"long", base64.StdEncoding.EncodeToString(append(key, 1)), false, "33 bytes, want 32"},
		{"not base64", "this is not base64 at all!!", false, "not valid base64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseKey(tc.in)
			if tc.ok {
				if err != nil || !bytes.Equal(got, key) {
					t.Fatalf("ParseKey = %x, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.errHas)
			}
			if tc.in != "" && strings.Contains(err.Error(), strings.TrimSpace(tc.in)) {
				t.Fatalf("error echoes the key: %v", err)
			}
		})
	}
}

func TestNewKeyring(t *testing.T) {
	good := testKey("a")
	tests := []struct {
		name   string
		active string
		keys   map[string][]byte
		errHas string
	}{
		{"ok", "a", map[string][]byte{"a": good, "b-2024.1": testKey("b")}, ""},
		{"no keys", "a", nil, "no keys"},
		{"active missing", "c", map[string][]byte{"a": good}, `active key "c"`},
		{"short key", "a", map[string][]byte{"a": good[:31]}, "31 bytes, want 32"},
		{"bad id", "a b", map[string][]byte{"a b": good}, "only letters"},
		{"empty id", "", map[string][]byte{"": good}, "1 to 64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k, err := NewKeyring(tc.active, tc.keys)
			if tc.errHas == "" {
				if err != nil || k.ActiveID() != tc.active {
					t.Fatalf("NewKeyring: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.errHas)
			}
		})
	}
}

func TestSealOpen(t *testing.T) {
	k := testKeyring(t, "new", "old")
	plain := []byte("sip:alice@example.com token=abcdef")
	aad := []byte("record-1")
	sealed, err := k.Seal(plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, plain[:8]) {
		t.Fatal("sealed value holds plaintext")
	}
	if again, _ := k.Seal(plain, aad); bytes.Equal(again, sealed) {
		t.Fatal("two seals are identical: nonce reused")
	}
	got, id, err := k.Open(sealed, aad)
	if err != nil || id != "new" || !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, %q, %v", got, id, err)
	}

	// Another record's aad: the value was moved.
	if _, _, err := k.Open(sealed, []byte("record-2")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with other aad: %v, want ErrCorrupt", err)
	}
	// Any single flipped byte, header included, is caught.
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		if _, _, err := k.Open(bad, aad); err == nil {
			t.Fatalf("flipped byte %d: Open succeeded", i)
		}
	}
	// Truncations never panic.
	for i := range sealed {
		if _, _, err := k.Open(sealed[:i], aad); err == nil {
			t.Fatalf("truncated to %d: Open succeeded", i)
		}
	}
	// Sealed under a key the keyring lacks.
	other := testKeyring(t, "gone")
	s2, _ := other.Seal(plain, aad)
	if _, id, err := k.Open(s2, aad); !errors.Is(err, ErrUnknownKey) || id != "gone" {
		t.Fatalf("Open under unknown key: %q, %v; want ErrUnknownKey", id, err)
	}
	// Same key id, different key bytes.
	imposter, _ := NewKeyring("new", map[string][]byte{"new": testKey("imposter")})
	if _, _, err := imposter.Open(sealed, aad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with wrong key bytes: %v, want ErrCorrupt", err)
	}
}

func FuzzKeyringOpen(f *testing.F) {
	k := testKeyring(f, "a")
	s, _ := k.Seal([]byte("hello"), []byte("aad"))
	f.Add(s, []byte("aad"))
	f.Add([]byte{1, 1, 'a'}, []byte(nil))
	f.Add([]byte{1, 0}, []byte(nil))
	f.Fuzz(func(t *testing.T, sealed, aad []byte) {
		plain, _, err := k.Open(sealed, aad)
		if err == nil && !bytes.Equal(plain, []byte("hello")) {
			t.Fatalf("forged value opened: %q", plain)
		}
	})
}

func TestParseID(t *testing.T) {
	var id ID
	for i := range id {
		id[i] = byte(i * 13)
	}
	s := id.String()
	if len(s) != 32 || strings.ToLower(s) != s || strings.ContainsAny(s, "=") {
		t.Fatalf("String() = %q, want 32 lowercase base32 characters", s)
	}
	for _, in := range []string{s, strings.ToUpper(s)} {
		got, err := ParseID(in)
		if err != nil || got != id {
			t.Fatalf("ParseID(%q) = %s, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", s[:31], s + "a", s[:31] + "1", s[:31] + "!"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) succeeded", bad)
		}
	}
}
