package sip

import (
	"context"
	"fmt"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/internal/relay"
)

// Unregister removes a binding at the registrar (REGISTER, Expires: 0)
// under a Call-ID of its own: a registrar removes a binding at an Expires: 0
// in another Call-ID (RFC 3261 §10.3 step 7), while in the registration's
// own it compares CSeqs, and the stored Call-ID and CSeq may be behind the
// device's (a refresh that changes nothing else is not written every time,
// relay.Options.RefreshStaleness). A registrar that challenges it cannot be
// answered for a SIP-native device (sipwake never holds its password); its
// binding then lapses at the registrar's own expiry. The binding was
// erased (expired, or by an operator): this node forgets its connection.
func (s *Server) Unregister(ctx context.Context, b relay.Binding) error {
	s.held.drop(s.relay.BindingID(b.AOR, b.Device))
	user, domain, _ := strings.Cut(string(b.AOR), "@")
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: domain})
	aor := sip.Uri{Scheme: "sip", User: user, Host: domain}
	fromParams := sip.NewParams()
	fromParams.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: fromParams})
	req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
	callID := sip.CallIDHeader(sip.GenerateTagN(32))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.REGISTER})
	contact := &sip.ContactHeader{}
	if err := sip.ParseUri(b.Upstream.Contact, &contact.Address); err != nil {
		return fmt.Errorf("upstream contact: %w", err)
	}
	req.AppendHeader(contact)
	req.AppendHeader(sip.NewHeader("Expires", "0"))
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(sip.NewHeader("User-Agent", s.opts.UserAgent))
	s.sendFrom(req, s.opts.Upstream.Transport)
	req.SetTransport(sip.NetworkToUpper(s.opts.Upstream.Transport))
	req.SetDestination(s.opts.Upstream.HostPort())
	req.SetBody(nil)

	res, err := s.upstreamDo(ctx, req)
	if err != nil {
		return fmt.Errorf("un-register: %w", err)
	}
	if !res.IsSuccess() {
		return fmt.Errorf("un-register: registrar answered %d %s", res.StatusCode, res.Reason)
	}
	return nil
}
