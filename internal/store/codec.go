package store

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"sync"
	"time"
)

// What both backends keep, byte for byte alike: a meta map (bbolt's meta
// bucket, Redis' {P}:meta hash) with the format and the sealed index key,
// and record values (see header.go) sealed with the same aad. A value
// written by one backend opens in the other under the same index key.
const (
	metaFormat   = "format"
	metaIndexKey = "index-key"
	formatV1     = "1"
	formatV2     = "2"
	formatV3     = "3" // bbolt only; Redis keeps exact time indexes
	formatV4     = "4" // bbolt only: the AOR index in memory
	formatV5     = "5" // bbolt only: records keyed in the order they are stored
	metaAAD      = "sipwake/meta/index-key/1"
	recAADPrefix = "sipwake/rec/1\x00"
)

// codec is the at-rest format of one store: it derives binding IDs and AOR
// hashes under the store's index key, and seals and opens record values
// under the keyring. It never touches a database; each backend holds one,
// made once the index key is read, so the two formats cannot drift apart.
type codec struct {
	keys     *Keyring
	log      *slog.Logger
	indexKey []byte    // immutable
	macs     sync.Pool // of *mac
}

// mac is an HMAC-SHA256 under the index key, with a buffer its input is
// put together in, and its sum taken into: one Write of bytes the mac
// owns, where a Write per string part converted (allocated) each.
type mac struct {
	hash.Hash
	in []byte
}

func newCodec(keys *Keyring, indexKey []byte, log *slog.Logger) *codec {
	return &codec{keys: keys, log: log, indexKey: indexKey}
}

// newIndexKey makes a store's random index key and seals it under the
// active key, for a store's first open.
func newIndexKey(keys *Keyring) (plain, sealed []byte, err error) {
	plain = make([]byte, sha256.Size)
	_, _ = rand.Read(plain)
	sealed, err = keys.Seal(plain, []byte(metaAAD))
	return plain, sealed, err
}

// openIndexKey opens the sealed index key of the store where names. If no
// configured key opens it, the error wraps ErrWrongKey.
func openIndexKey(keys *Keyring, sealed []byte, where string) ([]byte, error) {
	plain, id, err := keys.Open(sealed, []byte(metaAAD))
	if err != nil {
		if errors.Is(err, ErrUnknownKey) {
			return nil, fmt.Errorf("%w: %s was sealed under key id %q; configured: %q", ErrWrongKey, where, id, keys.IDs())
		}
		return nil, fmt.Errorf("%w: %s: the configured key %q is not the one it was sealed with", ErrWrongKey, where, id)
	}
	if len(plain) != sha256.Size {
		return nil, fmt.Errorf("store: %s: index key is %d bytes", where, len(plain))
	}
	return plain, nil
}

// resealIndexKey seals the index key in sealed again under the active key,
// for Rotate. It returns nil if sealed is under the active key already,
// and the key id it was sealed under.
func (c *codec) resealIndexKey(sealed []byte) (resealed []byte, from string, err error) {
	from, _, err = sealedKeyID(sealed)
	if err != nil || from == c.keys.ActiveID() {
		return nil, from, wrapIndexKey(err)
	}
	plain, _, err := c.keys.Open(sealed, []byte(metaAAD))
	if err != nil {
		return nil, from, wrapIndexKey(err)
	}
	resealed, err = c.keys.Seal(plain, []byte(metaAAD))
	clear(plain)
	return resealed, from, wrapIndexKey(err)
}

func wrapIndexKey(err error) error {
	if err != nil {
		return fmt.Errorf("index key: %w", err)
	}
	return nil
}

// ID derives the binding ID of device under aor. It touches no database.
// aor and device should not contain NUL bytes (SIP URIs cannot).
func (c *codec) ID(aor, device string) ID {
	var id ID
	c.hmac(id[:], "b\x00", aor, "\x00", device)
	return id
}

// DeriveKey returns a 32-byte key for another use of the store's secret
// (the SIP side's flow tokens), HMAC(indexKey, "k\x00"+label): every node
// sharing the store derives the same key, and no label yields an ID or an
// AOR hash (those start "b\x00" and "a\x00"). It touches no database.
func (c *codec) DeriveKey(label string) []byte {
	out := make([]byte, KeySize)
	c.hmac(out, "k\x00", label)
	return out
}

// aorHash is the AOR index key: HMAC(indexKey, "a\x00"+aor), 20 bytes.
func (c *codec) aorHash(aor string) []byte {
	h := make([]byte, IDSize)
	c.hmac(h, "a\x00", aor)
	return h
}

// hmac writes the first len(out) bytes of HMAC(indexKey, parts...) to out.
// Every REGISTER and call computes a few; the hashers are reused.
func (c *codec) hmac(out []byte, parts ...string) {
	m, ok := c.macs.Get().(*mac)
	if ok {
		m.Reset()
	} else {
		m = &mac{Hash: hmac.New(sha256.New, c.indexKey)}
	}
	m.in = m.in[:0]
	for _, p := range parts {
		m.in = append(m.in, p...)
	}
	_, _ = m.Write(m.in) // a hash.Hash never fails a write
	m.in = m.Sum(m.in[:0])
	copy(out, m.in)
	c.macs.Put(m)
}

// encodeExpiry is t as big-endian Unix nanoseconds with the sign bit
// flipped, so byte order is time order.
func encodeExpiry(t time.Time) []byte {
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(t.UnixNano())^(1<<63))
	return e[:]
}

func decodeExpiry(e []byte) time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(e)^(1<<63))).UTC()
}

func join(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func recAAD(id ID, hdr []byte) []byte {
	return join([]byte(recAADPrefix), id[:], hdr)
}

// seal builds the stored value of r.
func (c *codec) seal(r Record) ([]byte, error) {
	if r.ID.IsZero() {
		return nil, errors.New("store: put: zero ID")
	}
	if !validExpiry(r.ExpiresAt) {
		return nil, fmt.Errorf("store: put %s: expiry %v outside 1970..2262", r.ID, r.ExpiresAt)
	}
	if !r.DueAt.IsZero() && !validExpiry(r.DueAt) {
		return nil, fmt.Errorf("store: put %s: due time %v outside 1970..2262", r.ID, r.DueAt)
	}
	if len(r.Data) > MaxDataSize {
		return nil, fmt.Errorf("store: put %s: data is %d bytes, limit %d", r.ID, len(r.Data), MaxDataSize)
	}
	hdr := c.header(r)
	plain := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64+len(r.AOR)+len(r.Data)), uint64(len(r.AOR)))
	plain = append(append(plain, r.AOR...), r.Data...)
	sealed, err := c.keys.Seal(plain, recAAD(r.ID, hdr))
	clear(plain)
	if err != nil {
		return nil, fmt.Errorf("store: seal %s: %w", r.ID, err)
	}
	return append(hdr, sealed...), nil
}

// open decrypts a raw record.
func (c *codec) open(raw rawRecord) (Record, error) {
	plain, _, err := c.keys.Open(raw.sealed(), recAAD(raw.id, raw.header()))
	if err != nil {
		return Record{}, fmt.Errorf("store: open record %s: %w", raw.id, err)
	}
	n, k := binary.Uvarint(plain)
	if k <= 0 || uint64(len(plain)-k) < n {
		return Record{}, fmt.Errorf("store: open record %s: %w: bad plaintext", raw.id, ErrCorrupt)
	}
	aor := string(plain[k : k+int(n)])
	return Record{
		ID:        raw.id,
		AOR:       aor,
		ExpiresAt: raw.expiry(),
		DueAt:     raw.dueAt(),
		Account:   raw.account(),
		Data:      plain[k+int(n) : len(plain) : len(plain)],
	}, nil
}

// openAll decrypts raws, skipping (and logging) records that cannot be
// opened: one unreadable record must not hide the others.
func (c *codec) openAll(op string, raws []rawRecord) []Record {
	out := make([]Record, 0, len(raws))
	for _, raw := range raws {
		r, err := c.open(raw)
		if err != nil {
			c.log.Warn("store: skipping unreadable record", "op", op, "id", raw.id.String(), "err", err)
			continue
		}
		out = append(out, r)
	}
	return out
}

// openEach opens the records of a scan and calls fn with each; records that
// cannot be opened are skipped and logged.
func (c *codec) openEach(ctx context.Context, op string, fn func(Record) error) func([]rawRecord) error {
	return func(raws []rawRecord) error {
		for _, r := range c.openAll(op, validRaws(raws)) {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := fn(r); err != nil {
				return err
			}
		}
		return nil
	}
}

// keyUsage counts sealed values per key id over a backend's raw scan.
func (c *codec) keyUsage(ctx context.Context, scan func(context.Context, func([]rawRecord) error) error) (map[string]int, error) {
	usage := make(map[string]int)
	for _, id := range c.keys.IDs() {
		usage[id] = 0
	}
	err := scan(ctx, func(raws []rawRecord) error {
		for _, r := range raws {
			id := "?"
			if hdrLen(r.val) > 0 {
				if kid, _, err := sealedKeyID(r.sealed()); err == nil {
					id = kid
				}
			}
			usage[id]++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: key usage: %w", err)
	}
	return usage, nil
}

// rotation re-seals record values under the active key for one Rotate,
// and counts those it cannot open.
type rotation struct {
	c      *codec
	active string
	failed int
	first  error
}

func (c *codec) rotation() *rotation { return &rotation{c: c, active: c.keys.ActiveID()} }

// reseal returns raw's value with its header kept and its content sealed
// again under the active key; nil if there is nothing to do: raw has no
// header this version reads, is sealed under the active key already, or
// cannot be opened (counted for done).
func (ro *rotation) reseal(raw rawRecord) ([]byte, error) {
	if hdrLen(raw.val) == 0 {
		return nil, nil
	}
	if kid, _, err := sealedKeyID(raw.sealed()); err == nil && kid == ro.active {
		return nil, nil
	}
	hdr := raw.header()
	plain, _, err := ro.c.keys.Open(raw.sealed(), recAAD(raw.id, hdr))
	if err != nil {
		ro.failed++
		if ro.first == nil {
			ro.first = fmt.Errorf("record %s: %w", raw.id, err)
		}
		return nil, nil
	}
	sealed, err := ro.c.keys.Seal(plain, recAAD(raw.id, hdr))
	clear(plain)
	if err != nil {
		return nil, err
	}
	return join(hdr, sealed), nil
}

// done logs the rotation (with attrs first) and returns Rotate's result:
// an error if some records could not be opened.
func (ro *rotation) done(resealed int, attrs ...any) (int, error) {
	ro.c.log.Info("store: rotated", append(attrs, "to_key_id", ro.active, "resealed", resealed, "unreadable", ro.failed)...)
	if ro.failed > 0 {
		return resealed, fmt.Errorf("store: rotate: %d records could not be opened, first: %w", ro.failed, ro.first)
	}
	return resealed, nil
}
