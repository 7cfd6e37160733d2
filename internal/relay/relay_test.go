package relay_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/store"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type fixture struct {
	svc   *relay.Service
	st    *store.Bolt
	apns  *pushtest.APNs
	clock *clock
	logs  *bytes.Buffer
}

const ttl = 120 * time.Hour

// newFixture is a relay over a real bbolt file and the fake APNs (the
// devices are iPhones); wo are its wake-up options.
func newFixture(t *testing.T, wo ...relay.WakeupOptions) *fixture {
	t.Helper()
	keys, err := store.NewKeyring("k1", map[string][]byte{"k1": store.NewKey()})
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	st, err := store.OpenBolt(filepath.Join(t.TempDir(), "s.db"), keys, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	apns := pushtest.NewAPNs(t)
	d, err := push.New(apnsConfig(apns), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	c := &clock{t: time.Date(2026, 11, 23, 8, 0, 0, 0, time.UTC)}
	opts := relay.Options{RecordTTL: ttl, Providers: []string{"apns", "fcm"}}
	if len(wo) > 0 {
		opts.Wakeups = wo[0]
	}
	svc := relay.New(st, d, opts, log, c.now)
	return &fixture{svc: svc, st: st, apns: apns, clock: c, logs: logs}
}

// apnsConfig pushes through the fake APNs only, so these tests need no FCM
// client and link no Firebase SDK.
func apnsConfig(f *pushtest.APNs) push.Config {
	return push.Config{Apps: []push.AppConfig{f.App("ios")}}
}

// register stores phone i of alice as liblinphone registers it on iOS:
// a PushKit and a remote-notification token (or only the services given),
// its own +sip.instance; tweak changes it before it is stored.
func (f *fixture) register(t *testing.T, i int, tweak func(*relay.Binding), services ...string) relay.Binding {
	t.Helper()
	b, known := f.refresh(t, i, tweak, services...)
	if _, err := f.svc.Register(context.Background(), b, known); err != nil {
		t.Fatal(err)
	}
	return b
}

// refresh is the binding register would store, and the AOR's bindings as
// stored now.
func (f *fixture) refresh(t *testing.T, i int, tweak func(*relay.Binding), services ...string) (relay.Binding, []relay.Binding) {
	t.Helper()
	if len(services) == 0 {
		services = []string{push.ServiceVoIP, push.ServiceRemote}
	}
	var prid []string
	for _, sv := range services {
		tok := f.apns.VoIPToken(i)
		if sv == push.ServiceRemote {
			tok = f.apns.RemoteToken(i)
		}
		prid = append(prid, tok+":"+sv)
	}
	b := relay.Binding{
		AOR: "alice@example.test",
		Device: relay.Device{Provider: "apns", Token: strings.Join(prid, "&"),
			Param: f.apns.TeamID + "." + f.apns.BundleID + "." + strings.Join(services, "&")},
		Contact:  "sip:alice@192.0.2.1:5060;pn-provider=apns",
		Instance: fmt.Sprintf("<urn:uuid:00000000-0000-4000-8000-%012d>", i),
		Flow:     relay.Flow{Transport: "udp", Source: "192.0.2.1:5060"},
		Upstream: relay.UpstreamState{Expires: 600},
	}
	if tweak != nil {
		tweak(&b)
	}
	known, err := f.svc.Bindings(context.Background(), b.AOR)
	if err != nil {
		t.Fatal(err)
	}
	return b, known
}

// pushKitOnly registers a phone that gave only its PushKit token.
func (f *fixture) pushKitOnly(t *testing.T, i int) relay.Binding {
	t.Helper()
	return f.register(t, i, nil, push.ServiceVoIP)
}

func kinds(ps []pushtest.Push) []string {
	var out []string
	for _, p := range ps {
		switch {
		case p.Header.Get("apns-push-type") == "voip":
			out = append(out, "voip")
		case strings.Contains(string(p.Payload), `"kind":"register"`):
			out = append(out, "register")
		case strings.Contains(string(p.Payload), `"kind":"expiry_warning"`) || strings.Contains(string(p.Payload), `"kind":"expiry-warning"`):
			out = append(out, "expiry")
		default:
			out = append(out, string(p.Payload))
		}
	}
	return out
}

// RFC 8599 §4.1.4: a device is woken to refresh before its upstream
// registration lapses, by a background push on its remote token; a
// PushKit-only iPhone cannot be (APNs takes only VoIP pushes on that token,
// and iOS only for calls), and one that said +sip.pnsreg refreshes by
// itself, so neither gets one.
func TestWakeupsBeforeUpstreamLapses(t *testing.T) {
	f := newFixture(t, relay.WakeupOptions{Interval: time.Minute, RefreshLead: 2 * time.Minute})
	ctx := context.Background()
	f.register(t, 1, nil)
	f.pushKitOnly(t, 2)
	f.register(t, 3, func(b *relay.Binding) { b.PNSReg = true }) // refreshes by itself (+sip.pnsreg)
	k := f.svc.Wakeups()

	f.clock.advance(7 * time.Minute) // 3 minutes before the 600 s lapse
	if n, err := k.Pass(ctx); err != nil || n != 0 {
		t.Fatalf("early pass sent %d, %v", n, err)
	}
	f.clock.advance(90 * time.Second)
	if n, err := k.Pass(ctx); err != nil || n != 1 {
		t.Fatalf("due pass sent %d, %v", n, err)
	}
	if n, _ := k.Pass(ctx); n != 0 {
		t.Fatalf("woke the same registration twice (%d)", n)
	}
	ps := f.apns.Pushes()
	if len(ps) != 1 || ps[0].Token != f.apns.RemoteToken(1) || kinds(ps)[0] != "register" || !ps[0].Accepted() {
		t.Fatalf("refresh pushes: %v", kinds(ps))
	}
	if ps[0].Header.Get("apns-push-type") != "background" || ps[0].Header.Get("apns-priority") != "5" {
		t.Fatalf("binding refresh headers: %v", ps[0].Header)
	}
	// The device refreshed: the next lapse gets its own wake-up.
	f.register(t, 1, nil)
	f.clock.advance(9 * time.Minute)
	if n, _ := k.Pass(ctx); n != 1 {
		t.Fatalf("after a refresh: %d wake-ups, want 1", n)
	}
}

func TestWakeupsWarnBeforeTTLRunsOut(t *testing.T) {
	f := newFixture(t, relay.WakeupOptions{Interval: time.Minute, RefreshLead: time.Minute, ExpiryWarnings: []time.Duration{time.Hour, 24 * time.Hour}})
	ctx := context.Background()
	f.register(t, 3, func(b *relay.Binding) { b.Upstream.Expires = 0 }) // no refresh owed
	f.pushKitOnly(t, 4)                                                 // no token for an alert: never warned
	k := f.svc.Wakeups()

	f.clock.advance(ttl - 25*time.Hour)
	if n, _ := k.Pass(ctx); n != 0 {
		t.Fatal("warned too early")
	}
	f.clock.advance(2 * time.Hour) // 23 h left
	if n, _ := k.Pass(ctx); n != 1 {
		t.Fatal("no day-ahead warning")
	}
	if n, _ := k.Pass(ctx); n != 0 {
		t.Fatal("day-ahead warning repeated")
	}
	f.clock.advance(22*time.Hour + 30*time.Minute) // 30 min left
	if n, _ := k.Pass(ctx); n != 1 {
		t.Fatal("no hour-ahead warning")
	}
	got := kinds(f.apns.Pushes())
	if len(got) != 2 || got[0] != "expiry" || got[1] != "expiry" || len(f.apns.PushesTo(f.apns.RemoteToken(3))) != 2 {
		t.Fatalf("warnings: %v", got)
	}
	if !strings.Contains(string(f.apns.Pushes()[0].Payload), "alert") {
		t.Fatalf("expiry warning must be visible: %s", f.apns.Pushes()[0].Payload)
	}
}

func TestWakeupsEraseDeadToken(t *testing.T) {
	f := newFixture(t, relay.WakeupOptions{Interval: time.Minute, RefreshLead: 2 * time.Minute})
	f.apns.Program(f.apns.RemoteToken(4), pushtest.Behavior{Status: 410, Reason: "Unregistered"})
	f.register(t, 4, nil)
	k := f.svc.Wakeups()
	f.clock.advance(9 * time.Minute)
	if _, err := k.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := f.st.Count(context.Background()); n != 0 {
		t.Fatal("dead token's record kept")
	}
}

// wakeChans turns a call's wake events into channels a test can wait on.
type wakeChans struct {
	awake          chan relay.Binding
	pushed, failed chan struct{}
}

func newWakeChans() wakeChans {
	return wakeChans{awake: make(chan relay.Binding, 4), pushed: make(chan struct{}, 4), failed: make(chan struct{}, 4)}
}

func (c wakeChans) events() relay.WakeEvents {
	return relay.WakeEvents{
		Awake:  func(b relay.Binding) { c.awake <- b },
		Pushed: func() { c.pushed <- struct{}{} },
		Failed: func(relay.Binding) { c.failed <- struct{}{} },
	}
}

func TestWakeDeliversEachDeviceOnce(t *testing.T) {
	f := newFixture(t)
	b := f.register(t, 5, nil)
	ev := newWakeChans()
	end := f.svc.Wake(context.Background(), relay.Call{ID: "c1", CallerNumber: "+15550100"}, []relay.Binding{b}, 5*time.Second, ev.events())
	f.svc.Refreshed(b)
	f.svc.Refreshed(b) // a second REGISTER must not fork twice
	select {
	case got := <-ev.awake:
		if got.Device != b.Device {
			t.Fatalf("woke %+v", got.Device)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not woken")
	}
	select {
	case <-ev.awake:
		t.Fatal("device delivered twice")
	case <-time.After(100 * time.Millisecond):
	}
	end(relay.ReasonAnsweredElsewhere, b)
	f.svc.Drain()
	for _, p := range f.apns.Pushes() {
		if strings.Contains(string(p.Payload), `"kind":"cancel"`) {
			t.Fatal("the device that answered got a cancel push")
		}
	}
}

func TestStripPushParams(t *testing.T) {
	for in, want := range map[string]string{
		"sip:a@h":                                   "sip:a@h",
		"sip:a@h;pn-provider=apns;pn-prid=x;ob":     "sip:a@h;ob",
		"sip:a@h:5060;transport=tcp;PN-PARAM=y;x=1": "sip:a@h:5060;transport=tcp;x=1",
	} {
		if got := relay.StripPushParams(in); got != want {
			t.Errorf("StripPushParams(%q) = %q, want %q", in, got, want)
		}
	}
}

// An AOR whose domain is an IPv6 address is masked like one with an IPv4
// address or a name: the user hidden, the domain kept, in one spelling.
func TestAORHostAndMaskIPv6(t *testing.T) {
	for in, want := range map[string]string{
		"Example.TEST":        "example.test",
		"192.0.2.1":           "192.0.2.1",
		"[2001:DB8:0::1]":     "[2001:db8::1]",
		"2001:db8:0:0::1":     "[2001:db8::1]",
		"[::ffff:192.0.2.1]":  "[::ffff:192.0.2.1]",
		"[2001:db8::1%eth0]":  "[2001:db8::1%eth0]",
		"[not-an-address]":    "[not-an-address]",
		"sip.example.com.":    "sip.example.com.",
		"[2001:db8::17]:5060": "[2001:db8::17]:5060",
	} {
		if got := relay.AORHost(in); got != want {
			t.Errorf("AORHost(%q) = %q, want %q", in, got, want)
		}
	}
	for _, a := range []relay.AOR{"+4915112345678@192.0.2.1", "+4915112345678@[2001:db8::1]"} {
		_, host, _ := strings.Cut(string(a), "@")
		if m := a.Masked(); strings.Contains(m, "12345") || m != "+4***78@"+host {
			t.Errorf("Masked(%s) = %s", string(a), m)
		}
	}
}

func TestAORMasked(t *testing.T) {
	a := relay.AOR("+4915112345678@example.test")
	if strings.Contains(a.Masked(), "12345") || !strings.HasSuffix(a.Masked(), "@example.test") {
		t.Fatalf("Masked = %s", a.Masked())
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "aor", a, "device", relay.Device{Provider: "apns", Token: "0123456789abcdef"})
	if strings.Contains(buf.String(), "12345") || strings.Contains(buf.String(), "0123456789") {
		t.Fatalf("log leaked: %s", buf.String())
	}
}

func TestCallPushesPerDeviceAreCapped(t *testing.T) {
	f := newFixture(t)
	d, err := push.New(apnsConfig(f.apns), slog.New(slog.NewTextHandler(f.logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	capped := relay.New(f.st, d, relay.Options{RecordTTL: ttl, Providers: []string{"apns"}, CallPushesPerMinute: 3}, slog.New(slog.NewTextHandler(f.logs, nil)), f.clock.now)
	b := f.register(t, 6, nil)
	failed := 0
	for i := range 5 {
		ev := newWakeChans()
		end := capped.Wake(context.Background(), relay.Call{ID: "flood-" + string(rune('a'+i))}, []relay.Binding{b}, 5*time.Second, ev.events())
		select {
		case <-ev.pushed:
		case <-ev.failed:
			failed++
		case <-time.After(5 * time.Second):
			t.Fatal("no push outcome")
		}
		end(relay.ReasonMissed, b)
	}
	if failed != 2 {
		t.Fatalf("%d of 5 flood calls were capped, want 2", failed)
	}
	if n := len(f.apns.Pushes()); n != 3 {
		t.Fatalf("the phone got %d call pushes in a minute, want 3", n)
	}
	f.clock.advance(time.Minute)
	ev := newWakeChans()
	end := capped.Wake(context.Background(), relay.Call{ID: "later"}, []relay.Binding{b}, 5*time.Second, ev.events())
	select {
	case <-ev.pushed:
	case <-time.After(5 * time.Second):
		t.Fatal("the cap did not refill after a minute")
	}
	end(relay.ReasonMissed, b)
}

// The wake-ups read only due records, so every write must file the
// binding under the time they next have work for it.
func TestWakeupsFileDueTimes(t *testing.T) {
	f := newFixture(t, relay.WakeupOptions{Interval: time.Minute, RefreshLead: 2 * time.Minute, ExpiryWarnings: []time.Duration{time.Hour}})
	ctx := context.Background()
	early := f.register(t, 5, nil)
	k := f.svc.Wakeups()
	dueOf := func(b relay.Binding) time.Time {
		t.Helper()
		r, err := f.st.Get(ctx, f.svc.BindingID(b.AOR, b.Device))
		if err != nil {
			t.Fatal(err)
		}
		return r.DueAt
	}
	registered := f.clock.now()
	refresh := registered.Add(600*time.Second - 2*time.Minute)
	if got := dueOf(early); !got.Equal(refresh) {
		t.Fatalf("stored: DueAt %v, want the refresh push at %v", got, refresh)
	}
	if n, err := k.Pass(ctx); err != nil || n != 0 {
		t.Fatalf("first pass sent %d, %v", n, err)
	}
	if got := dueOf(early); !got.Equal(refresh) {
		t.Fatalf("after a pass with nothing due: DueAt %v, want the refresh push at %v", got, refresh)
	}

	plain := f.register(t, 6, func(b *relay.Binding) { b.Upstream.Expires = 0 })
	if got, want := dueOf(plain), registered.Add(ttl-time.Hour); !got.Equal(want) {
		t.Fatalf("binding owed no refresh: DueAt %v, want the expiry warning at %v", got, want)
	}
	if got := dueOf(f.pushKitOnly(t, 7)); !got.IsZero() {
		t.Fatalf("PushKit-only binding, which no wake-up can reach: DueAt %v, want none", got)
	}
	f.clock.advance(9 * time.Minute)
	if n, err := k.Pass(ctx); err != nil || n != 1 {
		t.Fatalf("refresh pass sent %d, %v", n, err)
	}
	if got, want := dueOf(early), registered.Add(ttl-time.Hour); !got.Equal(want) {
		t.Fatalf("after its refresh push: DueAt %v, want the expiry warning at %v", got, want)
	}
	f.clock.advance(ttl - 30*time.Minute - 9*time.Minute)
	if n, err := k.Pass(ctx); err != nil || n != 2 {
		t.Fatalf("warning pass sent %d, %v; want 2", n, err)
	}
	if got := dueOf(plain); !got.IsZero() {
		t.Fatalf("after its last warning: DueAt %v, want none", got)
	}
}

// liblinphone gives a phone new pn-prid values when its tokens change: the
// same +sip.instance (or, without one, the same contact user of the same
// app) is the same phone, and its new binding replaces the old one. Other
// phones of the AOR stay.
func TestNewTokensReplaceTheSamePhone(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	count := func() int {
		bs, err := f.svc.Bindings(ctx, "alice@example.test")
		if err != nil {
			t.Fatal(err)
		}
		return len(bs)
	}
	old := f.register(t, 10, nil)
	other := f.register(t, 11, nil) // another phone: its own instance
	known, err := f.svc.Bindings(ctx, old.AOR)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := f.svc.Register(ctx, relay.Binding{AOR: old.AOR, Instance: old.Instance, Contact: "sip:alice@198.51.100.9:40000",
		Device: relay.Device{Provider: "apns", Token: f.apns.VoIPToken(12) + ":voip", Param: old.Device.Param}}, known)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(); n != 2 || len(renewed.Replaced) != 1 || renewed.Replaced[0] != f.svc.BindingID(old.AOR, old.Device) {
		t.Fatalf("%d bindings, replaced %v; want the old one replaced and the other phone kept", n, renewed.Replaced)
	}
	if _, err := f.st.Get(ctx, f.svc.BindingID(other.AOR, other.Device)); err != nil {
		t.Fatalf("the other phone's binding: %v", err)
	}
	noInstance := func(i int, user string) relay.Binding {
		return f.register(t, i, func(b *relay.Binding) { b.Instance, b.Contact = "", "sip:"+user+"@192.0.2.7:5060" })
	}
	noInstance(13, "carol")
	if n := count(); n != 3 {
		t.Fatalf("%d bindings after a phone without instance joined, want 3", n)
	}
	noInstance(14, "carol") // same contact user, same app: the same phone
	noInstance(15, "dave")  // another contact user: another phone
	if n := count(); n != 4 {
		t.Fatalf("%d bindings, want 4", n)
	}
}

// An iPhone a VoIP push made ring for a call that ended before it
// connected is handed over when it connects within the call's wait (its
// app waits for that call's INVITE, to end it at the CANCEL); a phone that
// connected in time, or one pushed by an alert, is not.
func TestRangDevicesAreHandedOverAfterTheCall(t *testing.T) {
	f := newFixture(t)
	iphone := f.register(t, 20, nil)
	remoteOnly := f.register(t, 21, nil, push.ServiceRemote)
	ev := newWakeChans()
	rang := make(chan relay.Binding, 4)
	events := ev.events()
	events.Rang = func(b relay.Binding) { rang <- b }
	end := f.svc.Wake(context.Background(), relay.Call{ID: "c-rang"}, []relay.Binding{iphone, remoteOnly}, 5*time.Second, events)
	for range 2 {
		select {
		case <-ev.pushed:
		case <-time.After(5 * time.Second):
			t.Fatal("pushes not delivered")
		}
	}
	end(relay.ReasonMissed)
	f.svc.Refreshed(remoteOnly)
	f.svc.Refreshed(iphone)
	select {
	case b := <-rang:
		if b.Device != iphone.Device {
			t.Fatalf("handed over %+v, want the iPhone", b.Device)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the rung iPhone was not handed over")
	}
	f.svc.Refreshed(iphone)
	select {
	case b := <-rang:
		t.Fatalf("handed over again: %+v", b.Device)
	case <-time.After(200 * time.Millisecond):
	}
	f.svc.Drain()
}

// A refresh that changes nothing but the time is written only once the
// stored refresh time is Options.RefreshStaleness old, or a quarter of the
// granted expiry if that is less; any other change is written at once, and
// with RefreshStaleness 0 every refresh is. RefreshUnwritten says so before
// each Register, and returns the binding as stored.
func TestUnchangedRefreshesWrittenOncePerBound(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	written := func(b relay.Binding) time.Time {
		t.Helper()
		got, err := f.svc.Binding(ctx, f.svc.BindingID(b.AOR, b.Device))
		if err != nil {
			t.Fatal(err)
		}
		return got.UpdatedAt
	}
	t0 := f.clock.now()
	b := f.register(t, 1, nil) // RefreshStaleness 0
	f.clock.advance(time.Second)
	f.register(t, 1, nil)
	if got := written(b); !got.Equal(t0.Add(time.Second)) {
		t.Fatalf("with no staleness allowed the refresh was not written: stored %v", got)
	}

	d, err := push.New(apnsConfig(f.apns), slog.New(slog.NewTextHandler(f.logs, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	f.svc = relay.New(f.st, d, relay.Options{RecordTTL: ttl, Providers: []string{"apns"}, RefreshStaleness: 5 * time.Minute},
		slog.New(slog.NewTextHandler(f.logs, nil)), f.clock.now)
	hour := func(b *relay.Binding) { b.Upstream.Expires = 3600 }
	f.register(t, 1, hour) // the expiry changed: written
	last := f.clock.now()
	steps := []struct {
		after time.Duration
		tweak func(*relay.Binding)
		write bool
		why   string
	}{
		{time.Minute, hour, false, "nothing but the time changed"},
		{time.Minute, func(b *relay.Binding) { hour(b); b.Upstream.CSeq = 7 }, false, "only the CSeq changed"},
		{time.Minute, func(b *relay.Binding) { hour(b); b.Flow.Source = "192.0.2.1:5062" }, true, "the flow changed"},
		{4 * time.Minute, func(b *relay.Binding) { hour(b); b.Flow.Source = "192.0.2.1:5062" }, false, "4 of 5 minutes"},
		{time.Minute, func(b *relay.Binding) { hour(b); b.Flow.Source = "192.0.2.1:5062" }, true, "5 minutes since the last write"},
		{time.Second, func(b *relay.Binding) { hour(b); b.Upstream.CallID = "new"; b.Flow.Source = "192.0.2.1:5062" }, false, "only the Call-ID changed"},
		{time.Second, nil, true, "the granted expiry changed (600 s)"},
		{2 * time.Minute, nil, false, "2 of 2.5 minutes (a quarter of 600 s)"},
		{30 * time.Second, nil, true, "a quarter of the granted 600 s"},
		{time.Second, func(b *relay.Binding) { b.Contact += ";pn-msg-str=hi" }, true, "the contact changed"},
	}
	for _, s := range steps {
		f.clock.advance(s.after)
		next, known := f.refresh(t, 1, s.tweak)
		if stored, unwritten := f.svc.RefreshUnwritten(next, known); unwritten == s.write || unwritten && !stored.UpdatedAt.Equal(last) {
			t.Fatalf("%s: RefreshUnwritten says %v (stored at %v), want %v", s.why, unwritten, stored.UpdatedAt.Sub(t0), !s.write)
		}
		f.register(t, 1, s.tweak)
		if s.write {
			last = f.clock.now()
		}
		if got := written(b); !got.Equal(last) {
			t.Fatalf("%s: stored refresh time %v, want %v (write: %v)", s.why, got.Sub(t0), last.Sub(t0), s.write)
		}
	}
}
