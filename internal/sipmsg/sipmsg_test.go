package sipmsg

import (
	"slices"
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestSplitList(t *testing.T) {
	for in, want := range map[string][]string{
		`<sip:a@h>`:                          {`<sip:a@h>`},
		`<sip:a@h>, <sip:b@h>;expires=5`:     {`<sip:a@h>`, `<sip:b@h>;expires=5`},
		`"Doe, John" <sip:a@h;x=1,2>, *`:     {`"Doe, John" <sip:a@h;x=1,2>`, `*`},
		` <sip:a@h> ,<sip:b@h;pn-prid=x,y> `: {`<sip:a@h>`, `<sip:b@h;pn-prid=x,y>`},
	} {
		if got := slices.Collect(SplitList(in)); !slices.Equal(got, want) {
			t.Errorf("SplitList(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContactsAndExpires(t *testing.T) {
	parsed, err := sip.ParseMessage([]byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 1 REGISTER\r\nCall-ID: c\r\n" +
		"Contact: <sip:a@h;pn-prid=x>;expires=300, <sip:b@h>\r\nContact: *\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	msg := parsed.(*sip.Response)
	cs, err := Contacts(msg)
	if err != nil || len(cs) != 3 {
		t.Fatalf("Contacts = %v, %v", cs, err)
	}
	if !cs[2].Address.Wildcard || cs[0].Address.User != "a" {
		t.Fatalf("parsed %+v", cs)
	}
	if Expires(msg, cs[0], 1) != 300 || Expires(msg, cs[1], 1) != 60 || Expires(msg, nil, 1) != 60 {
		t.Fatal("expires not read from the contact, then the header")
	}
}

func TestHeadersMatchedAsSipgoMatchesThem(t *testing.T) {
	for name, want := range map[string]int{"EXPIRES": 60, "expires": 60, "Expires": 60, "Expireſ": 1, "Expire": 1} {
		res := sip.NewResponse(200, "OK")
		res.AppendHeader(sip.NewHeader(name, "60"))
		if got := Expires(res, nil, 1); got != want {
			t.Errorf("header %q: Expires = %d, want %d", name, got, want)
		}
		if found := len(res.GetHeaders("Expires")) > 0; found != (want == 60) {
			t.Errorf("header %q: sipgo's GetHeaders found it: %v", name, found)
		}
	}
}
