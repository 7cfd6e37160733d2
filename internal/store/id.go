package store

import (
	"encoding/base32"
	"fmt"
	"strings"
)

// IDSize is the length of an ID: the first 20 bytes (160 bits) of an
// HMAC-SHA256, short enough for a SIP URI user part, far beyond any chance
// of collision among bindings.
const IDSize = 20

// ID names one device binding of one AOR: the first 20 bytes of
// HMAC-SHA256(indexKey, "b\x00"+aor+"\x00"+device). It reveals nothing about
// the AOR or device without the store's index key, so it is safe to put in a
// SIP URI (the relay's opaque binding key).
type ID [IDSize]byte

// idLen is the length of an ID's text form. 20 bytes are a whole number of
// 5-byte base32 groups, so RFC 4648 base32 needs no padding for them.
const idLen = IDSize * 8 / 5

// String is the ID as 32 lowercase RFC 4648 base32 characters (no padding),
// all legal in a SIP URI user part; ParseID reverses it.
func (id ID) String() string { return strings.ToLower(base32.StdEncoding.EncodeToString(id[:])) }

// IsZero reports whether id is the zero ID, which names no binding.
func (id ID) IsZero() bool { return id == ID{} }

// ParseID parses the form String produces. Case is ignored, since some SIP
// elements fold the case of URI user parts.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != idLen {
		return id, fmt.Errorf("store: id %q: want %d base32 characters", s, idLen)
	}
	b, err := base32.StdEncoding.DecodeString(strings.ToUpper(s))
	if err != nil || len(b) != IDSize {
		return id, fmt.Errorf("store: id %q: not base32", s)
	}
	copy(id[:], b)
	return id, nil
}
