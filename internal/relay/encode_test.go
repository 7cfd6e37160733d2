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

// TestEncodeRoundTripsATokenTheContactRepeats: a Contact that holds the
// push token twice (sipp's register_push.xml puts it in +sip.instance
// too) keeps both; the pn-param it holds once is stored once.
func TestEncodeRoundTripsATokenTheContactRepeats(t *testing.T) {
	token, param := strings.Repeat("9f", 32), "ABCD1234.org.example.app.voip"
	b := Binding{
		AOR: "dave@example.test", Device: Device{Provider: "apns", Token: token, Param: param},
		Contact: "<sip:dave@192.0.2.5:6001;transport=UDP;pn-provider=apns;pn-prid=" + token + ";pn-param=" + param +
			`>;+sip.instance="<urn:sipp:` + token + `>"`,
		Upstream: UpstreamState{Path: true, Expires: 3600},
	}
	b.Upstream.Contact = b.Contact
	data, err := encode(b)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), param); n != 1 {
		t.Errorf("pn-param stored %d times, want once: %q", n, data)
	}
	got, err := decode(store.Record{AOR: string(b.AOR), Data: data})
	if err != nil || !reflect.DeepEqual(got, b) {
		t.Fatalf("round trip:\n got %+v, %v\nwant %+v", got, err, b)
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

// TestSameButTimeSeesEveryField changes each field of a stored binding in
// turn, found by reflection so that a field added to Binding later is
// changed too, and asks whether a refresh carrying it must be written. The
// answer must be encode's: the refresh is written when what would be
// stored differs once the refresh's own times, Call-ID and CSeq are set
// aside (the record holds the AOR; a handed-over account is always
// written).
func TestSameButTimeSeesEveryField(t *testing.T) {
	at := time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)
	contact := "sip:u1@198.51.100.7:40001;pn-provider=apns;pn-prid=0123456789abcdef;pn-param=TEAM.app.voip"
	cur := Binding{
		AOR: "alice@example.test", Device: Device{Provider: "apns", Token: "0123456789abcdef", Param: "TEAM.app.voip"},
		Contact: contact, Instance: "<urn:uuid:1>", Flow: Flow{Transport: "udp", Source: "198.51.100.7:40001"},
		Upstream: UpstreamState{Contact: contact, Path: true, Expires: 3600, RegisteredAt: at, CallID: "c1", CSeq: 7},
		PNSReg:   true, RefreshPushedFor: at, Warned: 1, UpdatedAt: at, ExpiresAt: at.Add(120 * time.Hour), Node: "10.0.0.1:5070",
	}
	s := &Service{opts: Options{RefreshStaleness: time.Hour}}
	// stored is what a binding's record holds of it, the refresh's times,
	// Call-ID and CSeq equalised to cur's.
	stored := func(b Binding) string {
		b.UpdatedAt, b.ExpiresAt = cur.UpdatedAt, cur.ExpiresAt
		b.Upstream.RegisteredAt, b.Upstream.CallID, b.Upstream.CSeq = cur.Upstream.RegisteredAt, cur.Upstream.CallID, cur.Upstream.CSeq
		data, err := encode(b)
		if err != nil {
			t.Fatal(err)
		}
		return string(b.AOR) + "\x00" + string(data)
	}
	if s.refreshStale(cur, cur) {
		t.Fatal("an unchanged refresh is written")
	}
	refresh, fields := cur, 0
	var each func(path string, v reflect.Value)
	each = func(path string, v reflect.Value) {
		if v.Kind() == reflect.Struct && v.Type() != reflect.TypeFor[time.Time]() {
			for i := range v.NumField() {
				each(path+"."+v.Type().Field(i).Name, v.Field(i))
			}
			return
		}
		fields++
		old := reflect.New(v.Type()).Elem()
		old.Set(v)
		switch {
		case v.Type() == reflect.TypeFor[time.Time]():
			v.Set(reflect.ValueOf(v.Interface().(time.Time).Add(time.Second)))
		case v.Kind() == reflect.String:
			v.SetString(v.String() + "x")
		case v.Kind() == reflect.Bool:
			v.SetBool(!v.Bool())
		case v.CanInt():
			v.SetInt(v.Int() + 1)
		case v.CanUint():
			v.SetUint(v.Uint() + 1)
		case v.Kind() == reflect.Pointer:
			v.Set(reflect.New(v.Type().Elem()))
		case v.Kind() == reflect.Slice:
			v.Set(reflect.Append(v, reflect.Zero(v.Type().Elem())))
		default:
			t.Fatalf("%s: a %s this test cannot change: teach it", path, v.Type())
		}
		defer v.Set(old)
		b := refresh
		want := stored(cur) != stored(b) || b.Account != nil
		if got := s.refreshStale(cur, b); got != want {
			t.Errorf("%s changed: written %v, want %v", path, got, want)
		}
	}
	each("Binding", reflect.ValueOf(&refresh).Elem())
	if fields < 20 {
		t.Fatalf("changed %d fields; Binding has more", fields)
	}
}
