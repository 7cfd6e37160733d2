package relay

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sipwake/sipwake/internal/store"
)

// compact marks record data in the binary form below. Data written before
// it is a binding's JSON, which starts with '{' and still reads.
const compact = 0x02

// In the stored contact, the device's push token and pn-param stand as
// these bytes (which no SIP URI holds): each is then stored once.
const (
	tokenMark = "\x01"
	paramMark = "\x02"
)

// Flags of the compact form.
const (
	flagPath    = 1 << iota // UpstreamState.Path
	flagPNSReg              // Binding.PNSReg
	flagAccount             // a handed-over account follows, as JSON
	flagElided              // the contact holds tokenMark/paramMark
)

// encode is a binding's record data: every REGISTER writes one, and a
// million of them must fit a gigabyte. What the record holds itself (the
// AOR, the expiry) is left out, the upstream contact too when it is the
// device's own (path mode), the push token and pn-param appear once
// instead of again inside the contact, and the rest is length-prefixed
// strings and varints: about 40% of the binding's JSON, with no
// compression to pay for on the REGISTER path.
func encode(b Binding) ([]byte, error) {
	upContact := b.Upstream.Contact
	if b.Upstream.Path && upContact == b.Contact {
		upContact = ""
	}
	flags := byte(0)
	if b.Upstream.Path {
		flags |= flagPath
	}
	if b.PNSReg {
		flags |= flagPNSReg
	}
	contact, elided := elide(b.Contact, b.Device)
	if elided {
		flags |= flagElided
	}
	var account []byte
	if b.Account != nil {
		flags |= flagAccount
		var err error
		if account, err = json.Marshal(b.Account); err != nil {
			return nil, err
		}
	}
	out := make([]byte, 0, 192+len(b.Contact)+len(upContact)+len(account))
	out = append(out, compact, flags)
	for _, s := range []string{b.Device.Provider, b.Device.Token, b.Device.Param, contact, b.Instance,
		b.Flow.Transport, b.Flow.Source, upContact, b.Upstream.CallID, b.Node} {
		out = appendString(out, s)
	}
	for _, n := range []int64{int64(b.Upstream.Expires), int64(b.Upstream.CSeq), int64(b.Warned),
		unixNano(b.Upstream.RegisteredAt), unixNano(b.RefreshPushedFor), unixNano(b.UpdatedAt)} {
		out = binary.AppendVarint(out, n)
	}
	if account != nil {
		out = appendString(out, string(account))
	}
	return out, nil
}

// decode is encode undone. Data in the older JSON form reads the same.
func decode(r store.Record) (Binding, error) {
	var (
		b   Binding
		err error
	)
	if len(r.Data) > 0 && r.Data[0] == compact {
		b, err = decodeCompact(r.Data[1:])
	} else {
		err = json.Unmarshal(r.Data, &b)
	}
	if err != nil {
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

func decodeCompact(data []byte) (Binding, error) {
	d := reader{data: data}
	flags := d.byte()
	var b Binding
	for _, s := range []*string{&b.Device.Provider, &b.Device.Token, &b.Device.Param, &b.Contact, &b.Instance,
		&b.Flow.Transport, &b.Flow.Source, &b.Upstream.Contact, &b.Upstream.CallID, &b.Node} {
		*s = d.string()
	}
	if flags&flagElided != 0 {
		b.Contact = restore(b.Contact, b.Device)
	}
	expires, cseq, warned := d.varint(), d.varint(), d.varint()
	b.Upstream.Expires, b.Upstream.CSeq, b.Warned = int(expires), uint32(cseq), int(warned)
	for _, t := range []*time.Time{&b.Upstream.RegisteredAt, &b.RefreshPushedFor, &b.UpdatedAt} {
		*t = fromUnixNano(d.varint())
	}
	b.Upstream.Path, b.PNSReg = flags&flagPath != 0, flags&flagPNSReg != 0
	if flags&flagAccount != 0 {
		b.Account = new(Account)
		if account := d.string(); d.err == nil {
			d.err = json.Unmarshal([]byte(account), b.Account)
		}
	}
	if d.err == nil && len(d.data) > 0 {
		d.err = errors.New("trailing bytes")
	}
	if d.err != nil {
		return Binding{}, d.err
	}
	return b, nil
}

// elide puts the marks in for the device's token and pn-param, each where
// it appears in the contact exactly once; false when it changed nothing.
func elide(contact string, d Device) (string, bool) {
	for _, s := range []string{contact, d.Token, d.Param} {
		if strings.ContainsAny(s, tokenMark+paramMark) {
			return contact, false
		}
	}
	out := contact
	for _, v := range []struct{ value, mark string }{{d.Token, tokenMark}, {d.Param, paramMark}} {
		if v.value == "" {
			continue
		}
		// Only a value the contact holds once: restore puts it back there.
		if i := strings.Index(out, v.value); i >= 0 && !strings.Contains(out[i+len(v.value):], v.value) {
			out = out[:i] + v.mark + out[i+len(v.value):]
		}
	}
	return out, out != contact
}

func restore(contact string, d Device) string {
	contact = strings.Replace(contact, paramMark, d.Param, 1)
	return strings.Replace(contact, tokenMark, d.Token, 1)
}

func appendString(out []byte, s string) []byte {
	return append(binary.AppendUvarint(out, uint64(len(s))), s...)
}

// unixNano keeps the zero time zero.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// reader takes the compact form apart; the first error sticks, and every
// read after it yields zero values.
type reader struct {
	data []byte
	err  error
}

var errTruncated = errors.New("truncated")

func (r *reader) byte() byte {
	if r.err != nil || len(r.data) == 0 {
		r.fail()
		return 0
	}
	c := r.data[0]
	r.data = r.data[1:]
	return c
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	n, k := binary.Varint(r.data)
	if k <= 0 {
		r.fail()
		return 0
	}
	r.data = r.data[k:]
	return n
}

func (r *reader) string() string {
	if r.err != nil {
		return ""
	}
	n, k := binary.Uvarint(r.data)
	if k <= 0 || n > uint64(len(r.data)-k) {
		r.fail()
		return ""
	}
	s := string(r.data[k : k+int(n)])
	r.data = r.data[k+int(n):]
	return s
}

func (r *reader) fail() {
	if r.err == nil {
		r.err = errTruncated
	}
}
