package store

import (
	"errors"
	"math"
	"time"
)

var (
	// ErrNotFound is returned when no record has the ID asked for.
	ErrNotFound = errors.New("store: record not found")
	// ErrWrongKey is returned (wrapped) by OpenBolt when none of the
	// configured keys opens the store's sealed index key. Start-up must stop:
	// the file is left exactly as it was.
	ErrWrongKey = errors.New("store: none of the configured keys opens this store")
	// ErrClosed is returned by every operation on a closed store.
	ErrClosed = errors.New("store: closed")
	// ErrNotReplicated is returned (wrapped) by a Redis store that waits for
	// replicas (RedisOptions.MinReplicas) when fewer confirmed a write in
	// time. The write was made on the primary and may or may not survive a
	// fail-over: the caller must not report it as stored.
	ErrNotReplicated = errors.New("store: write not confirmed by enough Redis replicas")
)

// chunk bounds the records one transaction (bbolt) or round trip (Redis)
// handles in Scan, Rotate and the like, keeping each short while the relay
// keeps writing.
const chunk = 256

// MaxDataSize bounds Record.Data. A binding's payload is a few hundred bytes;
// the bound keeps a faulty caller from bloating the file.
const MaxDataSize = 64 << 10

// Record is one device binding as the store sees it: an ID, the AOR it
// belongs to, when it expires, and the relay's opaque payload. AOR and Data
// exist in plaintext only in memory; at rest they are sealed together, and
// the AOR index holds only an HMAC of the AOR.
type Record struct {
	ID        ID
	AOR       string
	ExpiresAt time.Time // returned in UTC, at nanosecond precision
	Data      []byte
	// DueAt is when the owner next wants the record back from ScanDue
	// (e.g. a wake-up push it must send then); zero keeps it out of the
	// due index. Returned in UTC.
	DueAt time.Time
	// Account puts the record in the accounts index (ScanAccounts): the
	// few records that are handed-over accounts, found without a full
	// Scan.
	Account bool
}

// Expiry times are stored as Unix nanoseconds; a record must expire between
// 1970 and 2262.
const maxExpirySec = math.MaxInt64/int64(time.Second) - 1

func validExpiry(t time.Time) bool {
	return !t.IsZero() && t.Unix() >= 0 && t.Unix() <= maxExpirySec
}
