package pn

import (
	"crypto/x509"
	"time"
)

// FCMOptions configures one FCM client (one Firebase project): what package
// push reads from an app's config and hands the client constructor of
// package fcm. It lives here, not in fcm, so that push names it without
// importing fcm: what imports push then links no Firebase SDK.
type FCMOptions struct {
	ProjectID string
	// Endpoint is the base URL requests go to ({Endpoint}/projects/{id}/messages:send);
	// empty means fcm.DefaultEndpoint.
	Endpoint string
	// CredentialsJSON is a service-account key file's content. Its token_uri
	// is where OAuth access tokens are fetched.
	CredentialsJSON []byte
	// RootCAs, when non-nil, replaces the system roots for both FCM and the
	// token endpoint.
	RootCAs *x509.CertPool
	// Now is the clock of the pushes' send-time; nil means time.Now.
	Now func() time.Time
}
