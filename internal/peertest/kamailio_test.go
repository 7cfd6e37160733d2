package peertest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/peertest"
)

const domain = "example.test"

func alice() peertest.SippUser {
	return peertest.SippUser{
		User: "alice", Domain: domain, Password: "s3cret",
		Provider: "apns", PRID: "00fc13adff78512", Param: "TEAMID.org.example.app.voip",
	}
}

func startRegistrar(t *testing.T) *peertest.Kamailio {
	t.Helper()
	return peertest.StartKamailio(t, peertest.KamailioOptions{
		Addr:   peertest.Addr(t, 1, 5060),
		Domain: domain,
		Users:  map[string]string{"alice": "s3cret", "bob": "b0b"},
	})
}

// register runs register_auth.xml for u from IP(t, n):5060 and fails the
// test unless it ends in 200.
func register(t *testing.T, remote string, n int, u peertest.SippUser, expires string) *peertest.SippResult {
	t.Helper()
	res, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "register_auth"),
		Remote:    remote,
		LocalIP:   peertest.IP(t, n),
		LocalPort: 5060,
		Injection: peertest.RegisterInjection(u),
		Keys:      map[string]string{"expires": expires},
		Timeout:   10 * time.Second,
	})
	if err != nil {
		t.Fatalf("register %s: %v", u.User, err)
	}
	return res
}

func locations(t *testing.T, k *peertest.Kamailio, aor string) []peertest.Binding {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bs, err := k.Locations(ctx, aor)
	if err != nil {
		t.Fatalf("Locations(%s): %v", aor, err)
	}
	return bs
}

func TestKamailioRegisterChallengesStoresAndRemoves(t *testing.T) {
	t.Parallel()
	k := startRegistrar(t)

	// Without credentials the registrar challenges.
	_, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "register_noauth_expect"),
		Remote:    k.Addr,
		LocalIP:   peertest.IP(t, 2),
		LocalPort: 5060,
		Injection: peertest.RegisterInjection(alice()),
		Keys:      map[string]string{"expires": "600", "expect": "401", "contact_params": ""},
		Timeout:   10 * time.Second,
	})
	if err != nil {
		t.Fatalf("unauthenticated REGISTER: %v", err)
	}

	// A wrong password is challenged again: register_auth must fail.
	bad := alice()
	bad.Password = "wrong"
	res, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "register_auth"),
		Remote:    k.Addr,
		LocalIP:   peertest.IP(t, 2),
		LocalPort: 5060,
		Injection: peertest.RegisterInjection(bad),
		Keys:      map[string]string{"expires": "600"},
		Timeout:   5 * time.Second,
	})
	if err == nil || res.Successful != 0 {
		t.Fatalf("REGISTER with a wrong password succeeded (err=%v, stats=%v)", err, res.Stats)
	}
	if bs := locations(t, k, "sip:alice@"+domain); len(bs) != 0 {
		t.Fatalf("bindings after failed auth: %+v", bs)
	}

	res = register(t, k.Addr, 2, alice(), "600")
	if res.Successful != 1 || res.Failed != 0 {
		t.Errorf("stats: %d successful, %d failed, want 1, 0", res.Successful, res.Failed)
	}
	got := res.Received()
	if len(got) != 2 || !strings.HasPrefix(got[0], "SIP/2.0 401") || !strings.HasPrefix(got[1], "SIP/2.0 200") {
		t.Errorf("sipp received %q, want a 401 then a 200", got)
	}

	bs := locations(t, k, "sip:alice@"+domain)
	if len(bs) != 1 {
		t.Fatalf("bindings = %+v, want one", bs)
	}
	b := bs[0]
	if b.Params["pn-provider"] != "apns" || b.Params["pn-prid"] != "00fc13adff78512" ||
		b.Params["pn-param"] != "TEAMID.org.example.app.voip" {
		t.Errorf("contact %s: pn params %v", b.Contact, b.Params)
	}
	if !strings.Contains(b.Contact, peertest.IP(t, 2)+":5060") {
		t.Errorf("contact %s does not point at sipp", b.Contact)
	}
	if b.Expires < 590 || b.Expires > 600 {
		t.Errorf("expires %d, want ~600", b.Expires)
	}
	if len(b.Path) != 0 {
		t.Errorf("path %v on a direct registration", b.Path)
	}

	register(t, k.Addr, 2, alice(), "0")
	if bs := locations(t, k, "alice"); len(bs) != 0 {
		t.Fatalf("bindings after Expires: 0: %+v", bs)
	}
}

func TestKamailioRegisterWithoutPushParams(t *testing.T) {
	t.Parallel()
	k := startRegistrar(t)
	_, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "register_auth_params"),
		Remote:    k.Addr,
		LocalIP:   peertest.IP(t, 2),
		LocalPort: 5060,
		Transport: "t1",
		Injection: peertest.RegisterInjection(alice()),
		Keys:      map[string]string{"expires": "120", "contact_params": ";pn-provider=fcm"},
		Timeout:   10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	bs := locations(t, k, "alice@"+domain)
	if len(bs) != 1 || bs[0].Params["pn-provider"] != "fcm" || bs[0].HasParam("pn-prid") ||
		bs[0].Params["transport"] != "TCP" || !strings.HasPrefix(bs[0].Socket, "tcp:") {
		t.Fatalf("bindings = %+v", bs)
	}
}

func TestKamailioCallThroughRegistrar(t *testing.T) {
	t.Parallel()
	k := startRegistrar(t)

	// Unknown user: 404; known but unregistered: 480.
	for _, c := range []struct{ user, code string }{{"nobody", "404"}, {"bob", "480"}} {
		_, err := peertest.RunSipp(t, peertest.SippOptions{
			Name:        "invite_" + c.user,
			ScenarioXML: inviteExpect,
			Remote:      k.Addr,
			LocalIP:     peertest.IP(t, 3),
			LocalPort:   5060,
			Service:     c.user,
			Keys:        map[string]string{"expect": c.code},
			Timeout:     10 * time.Second,
		})
		if err != nil {
			t.Errorf("INVITE %s, want %s: %v", c.user, c.code, err)
		}
	}

	register(t, k.Addr, 2, alice(), "600")
	uac, _ := callAlice(t, k.Addr, "uas_answer", "uac_call", 200*time.Millisecond)
	// The ACK and BYE went through Kamailio as its Record-Route asked.
	// (Kamailio leaves the default port out of its Record-Route.)
	if !strings.Contains(uac.Messages(), "Route: <sip:"+peertest.IP(t, 1)+";lr") {
		t.Errorf("uac did not follow Record-Route:\n%s", uac.Messages())
	}

	// CANCEL while ringing.
	callAlice(t, k.Addr, "uas_ring_cancel", "uac_cancel", 0)
}

// callAlice runs the sipp caller uacScenario from address 3 to alice at
// remote while the sipp device at address 2 plays uasScenario (pausing
// pause between the caller's answer and its BYE), and returns what each saw.
func callAlice(t *testing.T, remote, uasScenario, uacScenario string, pause time.Duration) (uac, uas *peertest.SippResult) {
	t.Helper()
	device := peertest.StartSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, uasScenario),
		LocalIP:   peertest.IP(t, 2),
		LocalPort: 5060,
		Timeout:   15 * time.Second,
	})
	uac, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, uacScenario),
		Remote:    remote,
		LocalIP:   peertest.IP(t, 3),
		LocalPort: 5060,
		Service:   "alice",
		Pause:     pause,
		Timeout:   10 * time.Second,
	})
	if err != nil {
		t.Fatalf("%s: %v", uacScenario, err)
	}
	if uas, err = device.Wait(10 * time.Second); err != nil {
		t.Fatalf("%s: %v", uasScenario, err)
	}
	return uac, uas
}

// TestKamailioEdgePath registers through an edge proxy that adds a Path,
// then calls the device: the registrar routes the INVITE through the edge.
func TestKamailioEdgePath(t *testing.T) {
	t.Parallel()
	k := startRegistrar(t)
	edge := peertest.StartKamailio(t, peertest.KamailioOptions{
		Addr:         peertest.Addr(t, 4, 5060),
		Domain:       domain,
		EdgeUpstream: k.Addr,
		SharedMemMB:  32,
		PkgMemMB:     4,
		Children:     2,
	})

	res := register(t, edge.Addr, 2, alice(), "600")
	if !strings.Contains(res.Messages(), "Path: <sip:"+peertest.IP(t, 4)+";lr>") {
		t.Errorf("the 200 did not echo the edge's Path:\n%s", res.Messages())
	}
	bs := locations(t, k, "sip:alice@"+domain)
	if len(bs) != 1 || !bs[0].OnPath(edge.Addr) || bs[0].Params["pn-provider"] != "apns" {
		t.Fatalf("bindings = %+v, want one with Path via %s", bs, edge.Addr)
	}

	_, r := callAlice(t, k.Addr, "uas_answer", "uac_call", 0)
	inv := r.Received()[0]
	if !strings.HasPrefix(inv, "INVITE ") || !strings.Contains(inv, "SIP/2.0/UDP "+peertest.IP(t, 4)) {
		t.Errorf("INVITE did not pass the edge %s:\n%s", edge.Addr, inv)
	}
}

// inviteExpect sends one INVITE and expects the final code [expect].
const inviteExpect = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="invite_expect">
  <send retrans="500"><![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];rport;branch=[branch]
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
  <recv response="100" optional="true"/>
  <recv response="[expect]"/>
  <send><![CDATA[

      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

  ]]></send>
</scenario>
`

// An Open registrar saves a REGISTER without a challenge, for any user;
// register_push.xml times its round trip into the -trace_rtt file.
func TestKamailioOpenRegistrarSavesWithoutChallenge(t *testing.T) {
	t.Parallel()
	k := peertest.StartKamailio(t, peertest.KamailioOptions{
		Addr: peertest.Addr(t, 1, 5060), Domain: domain, Open: true,
		Users: map[string]string{"alice": "s3cret"},
	})
	carol := alice()
	carol.User = "carol" // no password anywhere
	res, err := peertest.RunSipp(t, peertest.SippOptions{
		Scenario:  peertest.Scenario(t, "register_push"),
		Remote:    k.Addr,
		LocalIP:   peertest.IP(t, 2),
		LocalPort: 5060,
		Injection: peertest.RegisterInjection(carol),
		Keys:      map[string]string{"expires": "600"},
		TraceRTT:  true,
		Timeout:   10 * time.Second,
	})
	if err != nil {
		t.Fatalf("REGISTER without credentials: %v", err)
	}
	bs := locations(t, k, "carol")
	if len(bs) != 1 || bs[0].Params["pn-prid"] != carol.PRID {
		t.Fatalf("bindings of carol = %+v, want one with pn-prid %s", bs, carol.PRID)
	}
	rtt, err := res.ResponseTimes()
	if err != nil || len(rtt) != 1 || rtt[0] <= 0 || rtt[0] > 10*time.Second {
		t.Fatalf("ResponseTimes = %v, %v; want one round trip", rtt, err)
	}
	if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", k.Pid())); err != nil || strings.TrimSpace(string(comm)) != "kamailio" {
		t.Errorf("Pid %d is %q (%v), want kamailio", k.Pid(), comm, err)
	}
}
