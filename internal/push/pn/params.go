package pn

import "strings"

// ProviderAPNsSandbox is the pn-provider of an iOS development build:
// liblinphone sends "apns.dev" for tokens issued by the APNs sandbox.
const ProviderAPNsSandbox = "apns.dev"

// Family is the push service a pn-provider is delivered by: "apns" for
// both "apns" and "apns.dev".
func Family(provider string) string {
	if provider == ProviderAPNsSandbox {
		return ProviderAPNs
	}
	return provider
}

// Sandbox tells whether a pn-provider names the APNs sandbox.
func Sandbox(provider string) bool { return provider == ProviderAPNsSandbox }

// APNs token services, as liblinphone tags them in pn-prid and lists them
// in pn-param.
const (
	// ServiceVoIP is a PushKit token: it takes VoIP pushes only, under the
	// topic "<bundle>.voip".
	ServiceVoIP = "voip"
	// ServiceRemote is a remote-notification token: alert and background
	// pushes, under the topic "<bundle>".
	ServiceRemote = "remote"
)

// Token is one push address of a device and the service it was issued for
// ("" for FCM, whose one token takes every push).
type Token struct {
	Value   string
	Service string
}

// APNsParam is an APNs pn-param taken apart: "<team>.<bundle>.<services>",
// services being "voip", "remote" or "voip&remote" (liblinphone), or
// absent ("<team>.<bundle>", a remote-notification topic).
type APNsParam struct {
	// App is what stands before the services: "<team>.<bundle>", or a
	// bundle id alone.
	App      string
	Services []string
}

// ParseAPNsParam reads an APNs pn-param.
func ParseAPNsParam(param string) APNsParam {
	p := APNsParam{App: param}
	if i := strings.LastIndexByte(param, '.'); i >= 0 {
		if services, ok := parseServices(param[i+1:]); ok {
			p.App, p.Services = param[:i], services
		}
	}
	return p
}

// Team returns the team that stands before bundle in the pn-param ("" for
// a bundle id alone); false when the pn-param names another app. The team
// is not checked: Linphone builds send a placeholder there.
func (p APNsParam) Team(bundle string) (string, bool) {
	if p.App == bundle {
		return "", true
	}
	team, ok := strings.CutSuffix(p.App, "."+bundle)
	if !ok || team == "" || strings.Contains(team, ".") {
		return "", false
	}
	return team, true
}

// AppKey names the app a device's pn-* parameters address, whatever its
// tokens: the push service and, for APNs, the pn-param without its
// services (sandbox and production builds of one app are one app).
func AppKey(provider, param string) string {
	family := Family(provider)
	if family == ProviderAPNs {
		param = ParseAPNsParam(param).App
	}
	return family + "\x00" + param
}

// parseServices reads "voip", "remote" or "voip&remote"; false when s is
// anything else (then it is part of the bundle id).
func parseServices(s string) ([]string, bool) {
	if !servicesList(s) {
		return nil, false
	}
	return strings.Split(s, "&"), true
}

// servicesList tells whether s is a list of services parseServices reads.
func servicesList(s string) bool {
	for sv := range strings.SplitSeq(s, "&") {
		if sv != ServiceVoIP && sv != ServiceRemote {
			return false
		}
	}
	return true
}

// firstService is the first service an APNs pn-param names, as
// ParseAPNsParam(param).Services[0] without the allocations; "" when it
// names none.
func firstService(param string) string {
	i := strings.LastIndexByte(param, '.')
	if i < 0 || !servicesList(param[i+1:]) {
		return ""
	}
	first, _, _ := strings.Cut(param[i+1:], "&")
	return first
}

// Tokens takes a pn-prid apart: liblinphone sends
// "<pushkit token>:voip&<remote token>:remote", or one token with or
// without its service. An APNs token without a service is for the service
// pn-param names first, or, when it names none, a remote-notification
// token (the topic "<team>.<bundle>" is the bundle's own). FCM's pn-prid is
// one token, taken whole.
func (t Target) Tokens() []Token { return t.appendTokens(nil) }

// appendTokens appends Tokens to out: Routable passes a buffer on its
// stack, since every REGISTER asks it three times.
func (t Target) appendTokens(out []Token) []Token {
	if Family(t.Provider) != ProviderAPNs {
		if t.Token == "" {
			return out
		}
		return append(out, Token{Value: t.Token})
	}
	def := ServiceRemote
	if sv := firstService(t.Param); sv != "" {
		def = sv
	}
	for part := range strings.SplitSeq(t.Token, "&") {
		tok := Token{Value: part, Service: def}
		if v, sv, ok := strings.Cut(part, ":"); ok {
			tok = Token{Value: v, Service: sv}
		}
		if tok.Value != "" {
			out = append(out, tok)
		}
	}
	return out
}

// TokenFor returns the token of toks issued for service, if there is one.
func TokenFor(toks []Token, service string) (Token, bool) {
	for _, t := range toks {
		if t.Service == service {
			return t, true
		}
	}
	return Token{}, false
}
