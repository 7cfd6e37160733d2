package sip

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

// nonceLifetime bounds how long a challenge sipwake issued stays good.
const nonceLifetime = 5 * time.Minute

// BindingURIFor is the Contact sipwake registers upstream for a binding it
// registers itself (a handed-over account): sip:sw-<id>@public:port.
func (s *Server) BindingURIFor(id store.ID, transport string) string {
	u := s.bindingURIOver(id, transport)
	return u.String()
}

// accountBinding finds the handed-over account a woken app's REGISTER is
// for: same AOR, same push device.
func (s *Server) accountBinding(reg *registration) (relay.Binding, bool) {
	// A device that already has a SIP-native binding is no handed-over app.
	if slices.ContainsFunc(reg.known, func(b relay.Binding) bool { return b.Device == reg.device }) {
		return relay.Binding{}, false
	}
	for _, b := range reg.known {
		if b.Account != nil && b.Device.SharesToken(reg.device) {
			return b, true
		}
	}
	return relay.Binding{}, false
}

// registerAccountApp answers the REGISTER of an app whose account sipwake
// registers upstream itself: sipwake is its registrar, challenging it with
// the account's own credentials, and the parked call goes out over the
// flow it came on. Nothing goes upstream: that registration is sipwake's.
func (s *Server) registerAccountApp(ctx context.Context, req *sip.Request, tx answerer, reg *registration, b relay.Binding) {
	_, realm, _ := strings.Cut(string(b.AOR), "@")
	if !s.digestValid(req, b.Account, realm) {
		s.metrics.register(regUpstreamDenied)
		s.reply(req, tx, sip.StatusUnauthorized, "Unauthorized",
			sip.NewHeader("WWW-Authenticate", fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=MD5, qop="auth"`, realm, s.nonce())))
		return
	}
	expires := sipmsg.Expires(req, reg.push, defaultExpires)
	b.Contact = reg.push.Address.String()
	b.Flow = relay.Flow{Transport: strings.ToLower(req.Transport()), Source: req.Source()}
	b.Node = s.relay.Node()
	if err := s.relay.UpdateAccount(ctx, b); err != nil {
		s.metrics.register(regStoreFailed)
		s.log.Error("handed-over account not updated", "account", b.Account, "error", err)
		s.reply(req, tx, sip.StatusInternalServerError, "Server Internal Error: sipwake could not store the flow")
		return
	}
	s.metrics.register(regStored)
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	contact := reg.push.Clone()
	contact.Params.Add("expires", strconv.Itoa(expires))
	res.AppendHeader(contact)
	res.AppendHeader(sip.NewHeader("Feature-Caps", fmt.Sprintf(`*;+sip.pns="%s"`, b.Device.Provider)))
	s.respond(tx, res)
	s.relay.Refreshed(b)
}

// digestValid checks an Authorization header against the account's
// password (or HA1), with a nonce sipwake issued recently.
func (s *Server) digestValid(req *sip.Request, acct *relay.Account, realm string) bool {
	h := req.GetHeader("Authorization")
	if h == nil {
		return false
	}
	cred, err := digest.ParseCredentials(h.Value())
	if err != nil || cred.Username != acct.Username || cred.Realm != realm || !s.nonceValid(cred.Nonce) {
		return false
	}
	chal := &digest.Challenge{Realm: cred.Realm, Nonce: cred.Nonce, Algorithm: cred.Algorithm, Opaque: cred.Opaque}
	if cred.QOP != "" {
		chal.QOP = []string{cred.QOP}
	}
	want, err := digest.Digest(chal, digest.Options{
		Method: string(req.Method), URI: cred.URI, Username: acct.Username, Password: acct.Password,
		A1: acct.HA1, Count: cred.Nc, Cnonce: cred.Cnonce,
	})
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(want.Response), []byte(cred.Response)) == 1
}

// nonce is stateless: issue time and an HMAC of it under a per-process key.
func (s *Server) nonce() string {
	ts := strconv.FormatInt(time.Now().Unix(), 16)
	return ts + "." + s.nonceMAC(ts)
}

func (s *Server) nonceValid(n string) bool {
	ts, mac, ok := strings.Cut(n, ".")
	if !ok || !hmac.Equal([]byte(mac), []byte(s.nonceMAC(ts))) {
		return false
	}
	secs, err := strconv.ParseInt(ts, 16, 64)
	return err == nil && time.Since(time.Unix(secs, 0)) < nonceLifetime
}

func (s *Server) nonceMAC(ts string) string {
	m := hmac.New(sha256.New, s.nonceKey)
	m.Write([]byte(ts))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

func newNonceKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}
