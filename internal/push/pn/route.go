package pn

// Route picks the token of a device that a push of kind k goes to, by the
// push service (family, see Family) that delivers it: the matrix in
// docs/PUSH.md. False when none of the device's tokens may carry that kind,
// or sipwake does not serve the service.
//
// APNs binds each token to one topic: a PushKit token takes VoIP pushes
// under "<bundle>.voip" and nothing else, and iOS 13+ demands a CallKit
// report for each of those, so it carries calls only; everything else
// needs the remote-notification token, under "<bundle>". A call goes to the
// PushKit token, or as an alert to the remote one when the device gave no
// PushKit token. An FCM device has one token, and it takes every kind.
func Route(family string, k Kind, toks []Token) (Token, bool) {
	switch family {
	case ProviderAPNs:
		if k == KindCall {
			if voip, ok := TokenFor(toks, ServiceVoIP); ok {
				return voip, true
			}
		}
		return TokenFor(toks, ServiceRemote)
	case ProviderFCM:
		if len(toks) > 0 {
			return toks[0], true
		}
	}
	return Token{}, false
}

// Routable tells whether a device's tokens can carry a push of kind k: a
// PushKit-only iPhone, for one, takes calls only.
func Routable(t Target, k Kind) bool {
	var buf [2]Token // liblinphone sends at most two
	_, ok := Route(Family(t.Provider), k, t.appendTokens(buf[:0]))
	return ok
}
