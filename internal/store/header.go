package store

import (
	"bytes"
	"fmt"
	"time"
)

// A record value (bbolt's rec bucket, Redis' {P}:r:<id>) starts with a
// plaintext header, authenticated as part of the seal's aad:
//
//	format 1: 1 | expiry (8) | HMAC(aor) (20)
//	format 2: 2 | expiry (8) | HMAC(aor) (20) | due (8) | flags (1)
//
// due is encoded like expiry, or all zero when the record is not in the due
// index (a valid due time is after 1970, so its encoding never is); flag
// bit 0 puts the record in the accounts index. The header says where a
// record sits in every index, so erasing it needs no other lookup.
//
// Format 1 values, written before the due and accounts indexes existed,
// read as due at the Unix epoch and as accounts: whoever owns them looks at
// each once (ScanDue, ScanAccounts) and its next Put writes format 2.
const (
	recFormatV1 = 1
	recHdrLenV1 = 1 + 8 + IDSize
	recFormat   = 2
	recHdrLen   = recHdrLenV1 + 8 + 1

	flagAccount = 1
)

// epochDue is where format 1 records sit in the due index.
var epochDue = encodeExpiry(time.Unix(0, 0))

// hdrLen is the length of v's header, or 0 if v has no header this version
// reads.
func hdrLen(v []byte) int {
	switch {
	case len(v) >= recHdrLen && v[0] == recFormat:
		return recHdrLen
	case len(v) >= recHdrLenV1 && v[0] == recFormatV1:
		return recHdrLenV1
	}
	return 0
}

// header builds a format 2 header for r (r already validated).
func (c *codec) header(r Record) []byte {
	due := make([]byte, 8)
	if !r.DueAt.IsZero() {
		due = encodeExpiry(r.DueAt)
	}
	var flags byte
	if r.Account {
		flags |= flagAccount
	}
	return join([]byte{recFormat}, encodeExpiry(r.ExpiresAt), c.aorHash(r.AOR), due, []byte{flags})
}

// rawRecord is a record value copied out of its transaction (or read from
// Redis), header checked by parseRaw.
type rawRecord struct {
	id  ID
	val []byte
}

func parseRaw(id ID, v []byte) (rawRecord, error) {
	if hdrLen(v) == 0 {
		return rawRecord{}, fmt.Errorf("%w: record %s: bad header", ErrCorrupt, id)
	}
	return rawRecord{id: id, val: bytes.Clone(v)}, nil
}

func (r rawRecord) header() []byte    { return r.val[:hdrLen(r.val)] }
func (r rawRecord) sealed() []byte    { return r.val[hdrLen(r.val):] }
func (r rawRecord) expiry() time.Time { return decodeExpiry(r.expiryKey()) }

// expiryKey is the record's expiry as the ttl index orders it.
func (r rawRecord) expiryKey() []byte { return r.val[1:9] }
func (r rawRecord) aorHash() []byte   { return r.val[9:recHdrLenV1] }

// dueKey is the record's due time as the due index orders it, nil if it is
// not in that index.
func (r rawRecord) dueKey() []byte {
	if r.val[0] == recFormatV1 {
		return epochDue
	}
	due := r.val[recHdrLenV1 : recHdrLenV1+8]
	if bytes.Equal(due, make([]byte, 8)) {
		return nil
	}
	return due
}

// dueAt is the record's DueAt (zero when it has none).
func (r rawRecord) dueAt() time.Time {
	if k := r.dueKey(); k != nil {
		return decodeExpiry(k)
	}
	return time.Time{}
}

// account says whether the record is in the accounts index.
func (r rawRecord) account() bool {
	return r.val[0] == recFormatV1 || r.val[recHdrLen-1]&flagAccount != 0
}

func validRaws(raws []rawRecord) []rawRecord {
	out := raws[:0]
	for _, r := range raws {
		if hdrLen(r.val) > 0 {
			out = append(out, r)
		}
	}
	return out
}
