package handover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"github.com/sipwake/sipwake/internal/relay"
	"github.com/sipwake/sipwake/internal/sipmsg"
	"github.com/sipwake/sipwake/internal/store"
)

// Cause classifies why a registration attempt failed, so the API can name
// it and the scheduler can tell a retry from a lost cause.
type Cause int

const (
	// CauseCredentials: the registrar refused the username/password (a
	// second challenge after answering one, or 403).
	CauseCredentials Cause = iota + 1
	// CauseRejected: the registrar refused the registration for another
	// reason (404, 400, 6xx …).
	CauseRejected
	// CauseRegistrarError: the registrar failed (5xx).
	CauseRegistrarError
	// CauseUnreachable: no connection to the registrar.
	CauseUnreachable
	// CauseTimeout: the registrar did not answer in time.
	CauseTimeout
	// CauseAccount: the account cannot be used as given (a registrar
	// address that does not parse, a digest algorithm HA1 cannot serve).
	CauseAccount
)

// Error is a failed REGISTER exchange. Its message is safe to show to the
// app and to log: it carries status lines, never credentials.
type Error struct {
	Cause  Cause
	Status int    // SIP status of the final response; 0 when there was none
	Reason string // its reason phrase
	Err    error  // the underlying transport error, if any
}

func (e *Error) Error() string {
	status := fmt.Sprintf("%d %s", e.Status, e.Reason)
	switch e.Cause {
	case CauseCredentials:
		return "registrar rejected the credentials (" + status + ")"
	case CauseRejected:
		return "registrar refused the registration (" + status + ")"
	case CauseRegistrarError:
		return "registrar failed (" + status + ")"
	case CauseUnreachable:
		return "registrar unreachable: " + errText(e.Err)
	case CauseTimeout:
		return "registrar did not answer in time"
	default:
		return "account unusable: " + errText(e.Err)
	}
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether trying again later may succeed without the app
// changing anything.
func (e *Error) Temporary() bool {
	switch e.Cause {
	case CauseRegistrarError, CauseUnreachable, CauseTimeout:
		return true
	}
	return false
}

func errText(err error) string {
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}

// maxExchanges bounds one registration: the first REGISTER, a digest
// answer, a 423 retry with Min-Expires, a stale-nonce answer, one spare.
const maxExchanges = 5

// register runs one REGISTER exchange for b's account, asking for expires
// seconds (0 un-registers), answering digest challenges and 423. On success
// b.Upstream holds the new CSeq and the granted expiry.
func (k *Registrations) register(ctx context.Context, id store.ID, b *relay.Binding, expires int) error {
	acct := b.Account
	dest, transport, err := Target(acct.Registrar, acct.Transport)
	if err != nil {
		return &Error{Cause: CauseAccount, Err: err}
	}
	user, domain, ok := strings.Cut(string(b.AOR), "@")
	if !ok || user == "" || domain == "" {
		return &Error{Cause: CauseAccount, Err: fmt.Errorf("aor %s is not user@domain", b.AOR)}
	}
	if b.Upstream.CallID == "" {
		b.Upstream.CallID = newCallID()
	}
	if b.Upstream.Contact == "" {
		b.Upstream.Contact = k.opts.ContactFor(id, transport)
	}
	var contact sip.Uri
	if err := sip.ParseUri(b.Upstream.Contact, &contact); err != nil {
		return &Error{Cause: CauseAccount, Err: fmt.Errorf("contact %q: %w", b.Upstream.Contact, err)}
	}
	ruri := sip.Uri{Scheme: "sip", Host: domain}
	aor := sip.Uri{Scheme: "sip", User: user, Host: domain}
	fromTag := sip.GenerateTagN(16)

	ctx, cancel := context.WithTimeout(ctx, k.opts.Timeout)
	defer cancel()

	var (
		authHeader  string
		authValue   string
		answeredFor string // nonce already answered
	)
	cseq := b.Upstream.CSeq
	for range maxExchanges {
		cseq++
		req := sip.NewRequest(sip.REGISTER, ruri)
		fromParams := sip.NewParams()
		fromParams.Add("tag", fromTag)
		req.AppendHeader(&sip.FromHeader{Address: aor, Params: fromParams})
		req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
		callID := sip.CallIDHeader(b.Upstream.CallID)
		req.AppendHeader(&callID)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: cseq, MethodName: sip.REGISTER})
		req.AppendHeader(&sip.ContactHeader{Address: contact, Params: sip.NewParams()})
		req.AppendHeader(sip.NewHeader("Expires", strconv.Itoa(expires)))
		maxFwd := sip.MaxForwardsHeader(70)
		req.AppendHeader(&maxFwd)
		req.AppendHeader(sip.NewHeader("User-Agent", k.opts.UserAgent))
		if authHeader != "" {
			req.AppendHeader(sip.NewHeader(authHeader, authValue))
		}
		req.SetTransport(sip.NetworkToUpper(transport))
		req.SetDestination(dest)
		req.SetBody(nil)

		res, err := k.client.Do(ctx, req)
		b.Upstream.CSeq = cseq
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sip.ErrTransactionTimeout) {
				return &Error{Cause: CauseTimeout, Err: err}
			}
			if ctx.Err() != nil {
				return &Error{Cause: CauseTimeout, Err: ctx.Err()}
			}
			return &Error{Cause: CauseUnreachable, Err: err}
		}
		switch code := res.StatusCode; {
		case res.IsSuccess():
			b.Upstream.Expires = grantedExpires(res, contact, expires)
			b.Upstream.RegisteredAt = k.now()
			return nil
		case code == sip.StatusUnauthorized || code == sip.StatusProxyAuthRequired:
			name, value, nonce, stale, err := answer(res, req, acct)
			if err != nil {
				return &Error{Cause: CauseAccount, Status: code, Reason: res.Reason, Err: err}
			}
			if nonce == answeredFor && !stale {
				return &Error{Cause: CauseCredentials, Status: code, Reason: res.Reason}
			}
			if answeredFor != "" && !stale {
				// A fresh nonce right after an answer is a refusal too:
				// registrars re-challenge instead of saying 403.
				return &Error{Cause: CauseCredentials, Status: code, Reason: res.Reason}
			}
			authHeader, authValue, answeredFor = name, value, nonce
		case code == sip.StatusIntervalToBrief:
			minExp, err := minExpires(res)
			if err != nil || minExp <= expires || expires == 0 {
				return &Error{Cause: CauseRejected, Status: code, Reason: res.Reason, Err: err}
			}
			k.log.Info("registrar asks for a longer expiry", "account", acct, "asked", expires, "min_expires", minExp)
			expires = minExp
			b.Account.Expires = minExp
		case code == sip.StatusForbidden:
			return &Error{Cause: CauseCredentials, Status: code, Reason: res.Reason}
		case code >= 500 && code < 600:
			return &Error{Cause: CauseRegistrarError, Status: code, Reason: res.Reason}
		default:
			return &Error{Cause: CauseRejected, Status: code, Reason: res.Reason}
		}
	}
	return &Error{Cause: CauseRejected, Status: 0, Reason: "too many challenges", Err: errors.New("registration did not settle")}
}

// answer computes the digest answer to a 401/407 from the account's
// password or, when only its HA1 is held, from HA1 (MD5 only: HA1 is
// MD5(user:realm:password)).
func answer(res *sip.Response, req *sip.Request, acct *relay.Account) (header, value, nonce string, stale bool, err error) {
	chalName, header := "WWW-Authenticate", "Authorization"
	if res.StatusCode == sip.StatusProxyAuthRequired {
		chalName, header = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(chalName)
	if h == nil {
		return "", "", "", false, fmt.Errorf("%d without %s", res.StatusCode, chalName)
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return "", "", "", false, fmt.Errorf("challenge: %w", err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	opts := digest.Options{
		Method:   sip.REGISTER.String(),
		URI:      req.Recipient.String(),
		Username: acct.Username,
		Password: acct.Password,
		Count:    1,
	}
	if acct.Password == "" {
		if chal.Algorithm != "" && chal.Algorithm != "MD5" {
			return "", "", "", false, fmt.Errorf("registrar asks for digest %s; an HA1 only serves MD5, hand over the password instead", chal.Algorithm)
		}
		opts.A1 = strings.ToLower(acct.HA1)
	}
	cred, err := digest.Digest(chal, opts)
	if err != nil {
		return "", "", "", false, err
	}
	return header, cred.String(), chal.Nonce, chal.Stale, nil
}

// grantedExpires reads the expiry the registrar granted our contact: its
// expires parameter in the 200's Contact list, else the Expires header,
// else what was asked.
func grantedExpires(res *sip.Response, ours sip.Uri, asked int) int {
	contacts, _ := sipmsg.Contacts(res)
	for _, c := range contacts {
		if strings.EqualFold(c.Address.User, ours.User) {
			if _, ok := c.Params.Get("expires"); ok {
				return sipmsg.Expires(res, c, asked)
			}
		}
	}
	return sipmsg.Expires(res, nil, asked)
}

func minExpires(res *sip.Response) (int, error) {
	h := res.GetHeader("Min-Expires")
	if h == nil {
		return 0, errors.New("423 without Min-Expires")
	}
	n, err := strconv.Atoi(strings.TrimSpace(h.Value()))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad Min-Expires %q", h.Value())
	}
	return n, nil
}

// defaultPort is the registrar port of a transport an account may
// register over; ok is false for any other transport.
func defaultPort(network string) (port string, ok bool) {
	switch network {
	case "udp", "tcp":
		return "5060", true
	case "tls":
		return "5061", true
	}
	return "", false
}

// Target reads an account's registrar ("host", "host:port", or a SIP URI
// such as "sip:pbx.example.com:5070;transport=tcp") and transport (udp,
// tcp, tls; empty takes the URI's transport parameter, else udp) into the
// host:port to send to and the transport.
func Target(registrar, transport string) (dest, network string, err error) {
	r := strings.TrimSpace(registrar)
	if r == "" {
		return "", "", errors.New("registrar is empty")
	}
	var uriTransport string
	if strings.HasPrefix(strings.ToLower(r), "sip:") || strings.HasPrefix(strings.ToLower(r), "sips:") {
		var u sip.Uri
		if err := sip.ParseUri(r, &u); err != nil {
			return "", "", fmt.Errorf("registrar %q: %w", registrar, err)
		}
		if u.User != "" {
			return "", "", fmt.Errorf("registrar %q: a registrar URI has no user part", registrar)
		}
		if t, ok := u.UriParams.Get("transport"); ok {
			uriTransport = strings.ToLower(t)
		}
		if u.IsEncrypted() && uriTransport == "" {
			uriTransport = "tls"
		}
		r = u.Host
		if u.Port > 0 {
			r = net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
		}
	}
	network = strings.ToLower(transport)
	if network == "" {
		network = uriTransport
	}
	if network == "" {
		network = "udp"
	}
	defPort, ok := defaultPort(network)
	if !ok {
		return "", "", fmt.Errorf("transport %q: want udp, tcp or tls", transport)
	}
	host, port, err := net.SplitHostPort(r)
	if err != nil {
		host, port = strings.Trim(r, "[]"), defPort
	}
	if host == "" || strings.ContainsAny(host, " ;<>@/") {
		return "", "", fmt.Errorf("registrar %q: not a host[:port] or SIP URI", registrar)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", "", fmt.Errorf("registrar %q: bad port", registrar)
	}
	return net.JoinHostPort(host, port), network, nil
}

func newCallID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
