package store

import (
	"bytes"
	"testing"
)

// A derived key is the store's, not the process's: it survives a reopen
// (and is the same on every node sharing the store), differs by label, and
// is none of the IDs the store hands out.
func TestDeriveKey(t *testing.T) {
	path := tempDB(t)
	b := openAt(t, path, testKeyring(t, "a"))
	k1 := b.DeriveKey("sip flow token v1")
	if len(k1) != KeySize {
		t.Fatalf("derived key is %d bytes", len(k1))
	}
	if bytes.Equal(k1, b.DeriveKey("another use")) {
		t.Fatal("two labels derive the same key")
	}
	id := b.ID("sip flow token v1", "")
	if bytes.HasPrefix(k1, id[:]) {
		t.Fatal("a derived key equals a binding ID")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	again := openAt(t, path, testKeyring(t, "a"))
	if !bytes.Equal(k1, again.DeriveKey("sip flow token v1")) {
		t.Fatal("the derived key changed across a reopen")
	}
}
