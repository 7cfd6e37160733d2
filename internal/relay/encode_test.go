package relay

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/store"
)

func TestEncodeLeavesOutWhatTheRecordHolds(t *testing.T) {
	at := time.Date(2026, 11, 23, 8, 0, 0, 123, time.UTC)
	contact := "sip:u1@198.51.100.7:40001;transport=udp;pn-provider=apns;pn-prid=0123456789abcdef;pn-param=TEAM.app.voip"
	for name, b := range map[string]Binding{
		"path mode": {
			AOR: "alice@example.test", Device: Device{Provider: "apns", Token: "0123456789abcdef", Param: "TEAM.app.voip"},
			Contact: contact, Flow: Flow{Transport: "udp", Source: "198.51.100.7:40001"},
			Upstream:  UpstreamState{Contact: contact, Path: true, Expires: 3600, RegisteredAt: at, CallID: "c1", CSeq: 7},
			UpdatedAt: at, ExpiresAt: at.Add(120 * time.Hour),
		},
		"contact mode": {
			AOR: "bob@example.test", Device: Device{Provider: "fcm", Token: "tok"}, Contact: "sip:bob@192.0.2.1",
			Upstream:  UpstreamState{Contact: "sip:sw-abc@sipwake.test;transport=udp", Expires: 600, RegisteredAt: at},
			UpdatedAt: at, ExpiresAt: at.Add(72 * time.Hour),
		},
		"handed-over account before its first REGISTER": {
			AOR: "carol@example.test", Device: Device{Provider: "apns", Token: "t2"}, Contact: "sip:carol@203.0.113.9",
			Account:   &Account{ID: "a1", App: "ios", Registrar: "sip:example.test", Username: "carol", Password: "pw"},
			UpdatedAt: at, ExpiresAt: at.Add(96 * time.Hour),
		},
	} {
		t.Run(name, func(t *testing.T) {
			data, err := encode(b)
			if err != nil {
				t.Fatal(err)
			}
			if data[0] != compact {
				t.Fatalf("data not in the compact form: % x", data[:8])
			}
			if strings.Contains(string(data), string(b.AOR)) {
				t.Errorf("stored data repeats the record's AOR: %q", data)
			}
			if n := strings.Count(string(data), b.Device.Token); n != 1 {
				t.Errorf("push token stored %d times: %q", n, data)
			}
			rec := store.Record{AOR: string(b.AOR), ExpiresAt: b.ExpiresAt, Data: data}
			got, err := decode(rec)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, b) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, b)
			}
			// Data written whole by earlier versions reads the same.
			whole, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			rec.Data = whole
			if old, err := decode(rec); err != nil || !reflect.DeepEqual(old, b) {
				t.Fatalf("whole data: %+v, %v", old, err)
			}
			if len(data) >= len(whole) {
				t.Errorf("encoded %d bytes, whole %d", len(data), len(whole))
			}
		})
	}
}

func TestDecodeRefusesBadCompactData(t *testing.T) {
	good, err := encode(Binding{Contact: "sip:a@b", Account: &Account{ID: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"truncated":         good[:len(good)-3],
		"trailing bytes":    append(bytes.Clone(good), 0),
		"marker only":       {compact},
		"length past end":   {compact, 0, 0x7f, 'a'},
		"bad account JSON":  append(good[:len(good)-1:len(good)-1], '!'),
		"varint never ends": append([]byte{compact, 0}, bytes.Repeat([]byte{0xff}, 12)...),
	} {
		if _, err := decode(store.Record{Data: data}); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// FuzzDecodeBinding: record data never panics the decoder, and whatever
// decodes encodes back to data that decodes the same.
func FuzzDecodeBinding(f *testing.F) {
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	for _, b := range []Binding{
		{Device: Device{Provider: "apns", Token: "abc", Param: "p"}, Contact: "sip:u@h;pn-prid=abc;pn-param=p", Upstream: UpstreamState{Path: true, Expires: 60, RegisteredAt: at}, UpdatedAt: at},
		{Device: Device{Provider: "fcm", Token: "t"}, Account: &Account{ID: "a", Password: "pw"}, Warned: 2, RefreshPushedFor: at},
	} {
		data, err := encode(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(`{"device":{"provider":"apns","token":"x"},"contact":"sip:a@b"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := decode(store.Record{AOR: "a@b", Data: data})
		if err != nil {
			return
		}
		again, err := encode(b)
		if err != nil {
			t.Fatalf("decoded binding does not encode: %v", err)
		}
		b2, err := decode(store.Record{AOR: "a@b", Data: again})
		if err != nil || !reflect.DeepEqual(b, b2) {
			t.Fatalf("round trip changed the binding:\n%+v\n%+v (%v)", b, b2, err)
		}
	})
}
