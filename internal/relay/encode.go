package relay

import (
	"bytes"
	"compress/flate"
	"encoding/json"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/sipwake/sipwake/internal/store"
)

// deflated marks record data that is a flate stream of the binding's
// JSON. JSON never starts with this byte, so data written before
// compression (plain JSON) still reads.
const deflated = 0x01

var (
	deflaters = sync.Pool{New: func() any {
		w, _ := flate.NewWriter(nil, flate.BestSpeed) // BestSpeed is a valid level: no error
		return w
	}}
	inflaters = sync.Pool{New: func() any { return flate.NewReader(nil) }}
)

// encode is a binding's record data. What the record holds itself (the
// AOR, the expiry) and the upstream contact when it is the device's own
// (path mode) are left out, and the JSON is deflated: a push token appears
// in the device and in its contact, and the field names repeat in every
// record, so a binding stores in about half its JSON. At a million
// records that is the difference between fitting in 1 GiB or not.
func encode(b Binding) ([]byte, error) {
	if b.Upstream.Path && b.Upstream.Contact == b.Contact {
		b.Upstream.Contact = ""
	}
	b.AOR, b.ExpiresAt = "", time.Time{}
	plain, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	buf := bytes.NewBuffer(make([]byte, 0, len(plain)/2+16))
	buf.WriteByte(deflated)
	w := deflaters.Get().(*flate.Writer)
	defer deflaters.Put(w)
	w.Reset(buf)
	if _, err := w.Write(plain); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decode is encode undone; data written whole (plain JSON, before encode
// left things out) reads the same.
func decode(r store.Record) (Binding, error) {
	plain := r.Data
	if len(plain) > 0 && plain[0] == deflated {
		var err error
		if plain, err = inflate(plain[1:]); err != nil {
			return Binding{}, fmt.Errorf("decode binding: %w", err)
		}
	}
	var b Binding
	if err := json.Unmarshal(plain, &b); err != nil {
		return Binding{}, fmt.Errorf("decode binding: %w", err)
	}
	if b.AOR == "" {
		b.AOR = AOR(r.AOR)
	}
	if b.ExpiresAt.IsZero() {
		b.ExpiresAt = r.ExpiresAt
	}
	if b.Upstream.Path && b.Upstream.Contact == "" {
		b.Upstream.Contact = b.Contact
	}
	return b, nil
}

// inflate undoes the deflate of encode, refusing output larger than a
// record may be.
func inflate(z []byte) ([]byte, error) {
	r := inflaters.Get().(io.ReadCloser)
	defer inflaters.Put(r)
	if err := r.(flate.Resetter).Reset(bytes.NewReader(z), nil); err != nil {
		return nil, err
	}
	plain, err := io.ReadAll(io.LimitReader(r, store.MaxDataSize+1))
	if err != nil {
		return nil, fmt.Errorf("inflate: %w", err)
	}
	if len(plain) > store.MaxDataSize {
		return nil, fmt.Errorf("inflate: more than %d bytes", store.MaxDataSize)
	}
	return plain, nil
}
