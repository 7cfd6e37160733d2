package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// KeySize is the length of a sealing key: AES-256.
const KeySize = 32

const (
	sealVersion = 1
	nonceSize   = 12 // standard GCM nonce
	maxKeyIDLen = 64
)

var (
	// ErrCorrupt means a sealed value is malformed or fails authentication:
	// it was truncated, tampered with, moved to another record, or sealed
	// under different key bytes than the keyring holds for its key id.
	ErrCorrupt = errors.New("store: sealed value cannot be opened")
	// ErrUnknownKey means a sealed value names a key id the keyring lacks
	// (a key retired too early, or the wrong key file).
	ErrUnknownKey = errors.New("store: sealed under a key id not in the keyring")
)

// Keyring holds the AES-256-GCM sealing keys by key id; one of them, the
// active key, seals everything new. The others only open what they sealed
// before, until Rotate has re-sealed it and KeyUsage shows them unused.
// A Keyring is immutable and safe for concurrent use.
type Keyring struct {
	active string
	aeads  map[string]cipher.AEAD
}

// NewKeyring builds a keyring from 32-byte keys by id; active names the key
// that seals. Key ids are 1 to 64 characters of [A-Za-z0-9._-]. The key
// bytes are copied into the cipher state; the caller may wipe keys after.
func NewKeyring(active string, keys map[string][]byte) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, errors.New("keyring: no keys")
	}
	k := &Keyring{active: active, aeads: make(map[string]cipher.AEAD, len(keys))}
	for id, key := range keys {
		if err := validKeyID(id); err != nil {
			return nil, err
		}
		if len(key) != KeySize {
			return nil, fmt.Errorf("keyring: key %q is %d bytes, want %d", id, len(key), KeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("keyring: key %q: %w", id, err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("keyring: key %q: %w", id, err)
		}
		k.aeads[id] = aead
	}
	if _, ok := k.aeads[active]; !ok {
		return nil, fmt.Errorf("keyring: active key %q is not among the keys %q", active, k.IDs())
	}
	return k, nil
}

func validKeyID(id string) error {
	if id == "" || len(id) > maxKeyIDLen {
		return fmt.Errorf("keyring: key id %q must be 1 to %d characters", id, maxKeyIDLen)
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("keyring: key id %q: only letters, digits, '.', '_' and '-' are allowed", id)
		}
	}
	return nil
}

// ParseKey decodes a sealing key given as base64 (standard or URL alphabet,
// padded or not; surrounding white space, such as a key file's trailing
// newline, is ignored). It must decode to exactly 32 bytes. Errors never
// echo the key.
func ParseKey(b64 string) ([]byte, error) {
	s := strings.TrimSpace(b64)
	if s == "" {
		return nil, errors.New("key: empty; want 32 bytes as base64 (e.g. from `head -c32 /dev/urandom | base64`)")
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		if len(b) != KeySize {
			return nil, fmt.Errorf("key: decodes to %d bytes, want %d (AES-256)", len(b), KeySize)
		}
		return b, nil
	}
	return nil, fmt.Errorf("key: not valid base64 (standard or URL alphabet, %d characters); want 32 bytes as base64", len(s))
}

// NewKey returns a fresh random 32-byte sealing key.
func NewKey() []byte {
	k := make([]byte, KeySize)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (it aborts the program instead)
	return k
}

// ActiveID is the id of the key that seals new values.
func (k *Keyring) ActiveID() string { return k.active }

// IDs lists the key ids in the keyring, sorted.
func (k *Keyring) IDs() []string {
	ids := make([]string, 0, len(k.aeads))
	for id := range k.aeads {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// Seal encrypts plain under the active key. The output is
//
//	version (1) | len(keyID) (1) | keyID | nonce (12) | ciphertext+tag
//
// The header and aad are authenticated: aad binds the value to where it is
// stored (its record key), so a value moved to another record fails Open.
// Nonces are random; a key should seal well under 2^32 values, which a
// binding store rotating keys yearly never approaches.
func (k *Keyring) Seal(plain, aad []byte) ([]byte, error) {
	aead := k.aeads[k.active]
	hdr := 2 + len(k.active)
	out := make([]byte, hdr+nonceSize, hdr+nonceSize+len(plain)+aead.Overhead())
	out[0] = sealVersion
	out[1] = byte(len(k.active))
	copy(out[2:], k.active)
	nonce := out[hdr : hdr+nonceSize]
	_, _ = rand.Read(nonce)
	return aead.Seal(out, nonce, plain, sealAAD(out[:hdr], aad)), nil
}

// Open authenticates and decrypts a value made by Seal with the same aad. It
// returns the plaintext and the id of the key that had sealed it. Errors wrap
// ErrUnknownKey or ErrCorrupt.
func (k *Keyring) Open(sealed, aad []byte) ([]byte, string, error) {
	id, hdr, err := sealedKeyID(sealed)
	if err != nil {
		return nil, "", err
	}
	aead, ok := k.aeads[id]
	if !ok {
		return nil, id, fmt.Errorf("%w: %q (keyring has %q)", ErrUnknownKey, id, k.IDs())
	}
	if len(sealed) < hdr+nonceSize+aead.Overhead() {
		return nil, id, fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	nonce := sealed[hdr : hdr+nonceSize]
	plain, err := aead.Open(nil, nonce, sealed[hdr+nonceSize:], sealAAD(sealed[:hdr], aad))
	if err != nil {
		return nil, id, fmt.Errorf("%w: authentication failed under key %q", ErrCorrupt, id)
	}
	return plain, id, nil
}

// sealedKeyID reads the key id from a sealed value's header without opening
// it, and returns the header length.
func sealedKeyID(sealed []byte) (string, int, error) {
	if len(sealed) < 2 {
		return "", 0, fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	if sealed[0] != sealVersion {
		return "", 0, fmt.Errorf("%w: unknown format version %d", ErrCorrupt, sealed[0])
	}
	hdr := 2 + int(sealed[1])
	if sealed[1] == 0 || len(sealed) < hdr {
		return "", 0, fmt.Errorf("%w: bad key id length", ErrCorrupt)
	}
	return string(sealed[2:hdr]), hdr, nil
}

func sealAAD(hdr, aad []byte) []byte {
	full := make([]byte, 0, len(hdr)+len(aad))
	return append(append(full, hdr...), aad...)
}
