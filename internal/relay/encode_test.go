package relay

import (
	"bytes"
	"compress/flate"
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
			if data[0] != deflated {
				t.Fatalf("data not marked deflated: % x", data[:8])
			}
			plain, err := inflate(data[1:])
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(plain), string(b.AOR)) || strings.Contains(string(plain), "expires_at") {
				t.Errorf("stored data repeats the record's AOR or expiry: %s", plain)
			}
			if b.Upstream.Path && strings.Count(string(plain), "pn-prid") != 1 {
				t.Errorf("path-mode contact stored twice: %s", plain)
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

func TestDecodeRefusesBadDeflate(t *testing.T) {
	var bomb bytes.Buffer
	bomb.WriteByte(deflated)
	w, _ := flate.NewWriter(&bomb, flate.BestCompression)
	w.Write(bytes.Repeat([]byte{' '}, store.MaxDataSize+10))
	w.Close()
	for name, data := range map[string][]byte{
		"truncated stream": {deflated, 0x4a, 0x4c},
		"not a stream":     append([]byte{deflated}, "{\"device\":{}}"...),
		"inflates too big": bomb.Bytes(),
		"marker only":      {deflated},
	} {
		if _, err := decode(store.Record{Data: data}); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}
