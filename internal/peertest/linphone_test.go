package peertest_test

import (
	"context"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

// TestLinphoneRegistersWithKamailio proves the linphonec harness: it
// registers with digest auth and its push parameters, answers a call,
// unregisters and registers again on command.
func TestLinphoneRegistersWithKamailio(t *testing.T) {
	t.Parallel()
	k := startRegistrar(t)
	l := peertest.StartLinphone(t, peertest.LinphoneOptions{
		Addr:          peertest.Addr(t, 2, 5080),
		Proxy:         k.Addr,
		User:          "alice",
		Domain:        domain,
		Password:      "s3cret",
		ContactParams: "pn-provider=apns;pn-prid=LINTOKEN;pn-param=TEAMID.org.example.app.voip",
	})

	waitBindings := func(want int) []peertest.Binding {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			bs, err := k.Locations(ctx, "sip:alice@"+domain)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if len(bs) == want {
				return bs
			}
			if time.Now().After(deadline) {
				t.Fatalf("bindings = %+v, want %d", bs, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	bs := waitBindings(1)
	if b := bs[0]; b.Params["pn-provider"] != "apns" || b.Params["pn-prid"] != "LINTOKEN" ||
		b.Params["pn-param"] != "TEAMID.org.example.app.voip" {
		t.Errorf("contact %s, params %v", b.Contact, b.Params)
	}

	// A call through Kamailio is answered automatically (-a).
	if _, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "uac_call"),
		Remote:    k.Addr,
		LocalIP:   peertest.IP(t, 3),
		LocalPort: 5060,
		Service:   "alice",
		Pause:     300 * time.Millisecond,
		Timeout:   10 * time.Second,
	}); err != nil {
		t.Fatalf("call to linphonec: %v", err)
	}

	if err := l.Unregister(); err != nil {
		t.Fatal(err)
	}
	waitBindings(0)
	if err := l.Register(); err != nil {
		t.Fatal(err)
	}
	waitBindings(1)
}
