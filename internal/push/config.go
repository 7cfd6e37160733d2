package push

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/certificate"
	"github.com/sideshow/apns2/token"

	"github.com/sipwake/sipwake/internal/configerr"
)

// Config is the `push` section of sipwake's config file.
type Config struct {
	// MaxInFlight bounds concurrent pushes across all apps; a push waiting
	// for a slot gives up when its context does. 0 means 512.
	MaxInFlight int `yaml:"max_in_flight"`
	// Apps are the apps (bundle ids / Firebase projects) sipwake pushes to,
	// chosen by pn-provider and pn-param.
	Apps []AppConfig `yaml:"apps"`
}

// AppConfig is one app on one provider.
type AppConfig struct {
	// Name identifies the app in logs and in `sipwake push test --app`.
	Name string `yaml:"name"`
	// Provider is "apns" or "fcm".
	Provider string     `yaml:"provider"`
	APNs     APNsConfig `yaml:"apns"`
	FCM      FCMConfig  `yaml:"fcm"`
}

// APNsConfig is an iOS app's APNs settings. Use token auth (key_file, key_id,
// team_id) or certificate auth (cert_file [+ password_file]), not both.
type APNsConfig struct {
	// BundleID matches pn-param "<team>.<bundle id>[.voip|.remote|.voip&remote]"
	// whatever the team; call pushes go to topic "<bundle id>.voip", the
	// others to "<bundle id>".
	BundleID string `yaml:"bundle_id"`
	// TeamID is required for token auth (the provider token's issuer). The
	// team in pn-param is not checked: Linphone builds send a placeholder.
	TeamID string `yaml:"team_id"`
	// KeyFile is the .p8 auth key from the Apple developer account.
	KeyFile string `yaml:"key_file"`
	KeyID   string `yaml:"key_id"`
	// CertFile is a .p12 or .pem push certificate (with its key).
	CertFile string `yaml:"cert_file"`
	// PasswordFile holds the certificate's password, if it has one.
	PasswordFile string `yaml:"password_file"`
	// Endpoint is "production" (default), "sandbox" or an https URL: where
	// pushes for pn-provider=apns go.
	Endpoint string `yaml:"endpoint"`
	// SandboxEndpoint is where pushes for pn-provider=apns.dev go (the
	// tokens of development builds): "sandbox" (default) or an https URL.
	SandboxEndpoint string `yaml:"sandbox_endpoint"`
	// CAFile, when set, is the only CA trusted for the endpoint.
	CAFile string `yaml:"ca_file"`
}

// FCMConfig is an Android app's Firebase settings.
type FCMConfig struct {
	// ProjectID is the Firebase project id; pn-param matches it or SenderID.
	ProjectID string `yaml:"project_id"`
	SenderID  string `yaml:"sender_id"`
	// CredentialsFile is the service-account JSON key.
	CredentialsFile string `yaml:"credentials_file"`
	// Endpoint overrides https://fcm.googleapis.com/v1.
	Endpoint string `yaml:"endpoint"`
	// CAFile, when set, is the only CA trusted for FCM and the token endpoint.
	CAFile string `yaml:"ca_file"`
}

// Validate reports every problem at once, each naming its key path. It reads
// (but does not keep) the key, certificate and credentials files.
func (c Config) Validate() configerr.List {
	var es configerr.List
	if c.MaxInFlight < 0 {
		es.Add("push.max_in_flight", "must not be negative, got %d", c.MaxInFlight)
	}
	names := map[string]int{}
	for i, a := range c.Apps {
		p := fmt.Sprintf("push.apps[%d]", i)
		if a.Name == "" {
			es.Add(p+".name", "required")
		} else if j, dup := names[a.Name]; dup {
			es.Add(p+".name", "%q already used by push.apps[%d]", a.Name, j)
		} else {
			names[a.Name] = i
		}
		switch a.Provider {
		case ProviderAPNs:
			if a.FCM != (FCMConfig{}) {
				es.Add(p+".fcm", "set on an apns app")
			}
			validateAPNs(&es, p+".apns", a.APNs)
		case ProviderFCM:
			if a.APNs != (APNsConfig{}) {
				es.Add(p+".apns", "set on an fcm app")
			}
			validateFCM(&es, p+".fcm", a.FCM)
		case "":
			es.Add(p+".provider", "required (apns or fcm)")
		default:
			es.Add(p+".provider", "%q is not apns or fcm", a.Provider)
		}
	}
	return es
}

func validateAPNs(es *configerr.List, p string, c APNsConfig) {
	if c.BundleID == "" {
		es.Add(p+".bundle_id", "required")
	} else if strings.HasSuffix(c.BundleID, ".voip") {
		es.Add(p+".bundle_id", "%q: give the bundle id without .voip", c.BundleID)
	}
	if _, err := apnsHost(c.Endpoint, false); err != nil {
		es.Add(p+".endpoint", "%v", err)
	}
	if _, err := apnsHost(c.SandboxEndpoint, true); err != nil {
		es.Add(p+".sandbox_endpoint", "%v", err)
	}
	switch {
	case c.KeyFile != "" && c.CertFile != "":
		es.Add(p, "key_file and cert_file both set: choose token or certificate auth")
	case c.KeyFile != "":
		if _, err := loadAuthKey(c.KeyFile); err != nil {
			es.Add(p+".key_file", "%v", err)
		}
		if c.KeyID == "" {
			es.Add(p+".key_id", "required with key_file")
		}
		if c.TeamID == "" {
			es.Add(p+".team_id", "required with key_file")
		}
	case c.CertFile != "":
		if c.PasswordFile != "" {
			if _, err := readFile(c.PasswordFile); err != nil {
				es.Add(p+".password_file", "%v", err)
				break
			}
		}
		if _, err := loadCertificate(c.CertFile, c.PasswordFile); err != nil {
			es.Add(p+".cert_file", "%v", err)
		}
	default:
		es.Add(p+".key_file", "required (or cert_file)")
	}
	if c.CAFile != "" {
		if _, err := loadCAs(c.CAFile); err != nil {
			es.Add(p+".ca_file", "%v", err)
		}
	}
}

func validateFCM(es *configerr.List, p string, c FCMConfig) {
	if c.ProjectID == "" {
		es.Add(p+".project_id", "required")
	}
	if c.CredentialsFile == "" {
		es.Add(p+".credentials_file", "required")
	} else if _, err := loadServiceAccount(c.CredentialsFile); err != nil {
		es.Add(p+".credentials_file", "%v", err)
	}
	if c.Endpoint != "" {
		if _, err := httpsURL(c.Endpoint); err != nil {
			es.Add(p+".endpoint", "%v", err)
		}
	}
	if c.CAFile != "" {
		if _, err := loadCAs(c.CAFile); err != nil {
			es.Add(p+".ca_file", "%v", err)
		}
	}
}

// maxCredentialFile bounds what is read of a key, certificate or
// service-account file: a config pointing at /dev/zero or a FIFO must not
// hang start-up.
const maxCredentialFile = 1 << 20

func readFile(name string) ([]byte, error) {
	fail := func(err error) ([]byte, error) {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("file %q not readable: %w", name, err)
	}
	st, err := os.Stat(name)
	if err != nil {
		return fail(err)
	}
	if !st.Mode().IsRegular() {
		return fail(errors.New("not a regular file"))
	}
	f, err := os.Open(name)
	if err != nil {
		return fail(err)
	}
	defer f.Close() //nolint:errcheck // read only: closing loses nothing
	b, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
	if err != nil {
		return fail(err)
	}
	if len(b) > maxCredentialFile {
		return fail(errors.New("larger than 1 MiB"))
	}
	return b, nil
}

func loadAuthKey(name string) (*ecdsa.PrivateKey, error) {
	b, err := readFile(name)
	if err != nil {
		return nil, err
	}
	k, err := token.AuthKeyFromBytes(b)
	if err != nil {
		return nil, fmt.Errorf("file %q is not a .p8 ECDSA key: %w", name, err)
	}
	return k, nil
}

func loadCertificate(name, passwordFile string) (tls.Certificate, error) {
	b, err := readFile(name)
	if err != nil {
		return tls.Certificate{}, err
	}
	var pw string
	if passwordFile != "" {
		p, err := readFile(passwordFile)
		if err != nil {
			return tls.Certificate{}, err
		}
		pw = strings.TrimRight(string(p), "\r\n")
	}
	var cert tls.Certificate
	if strings.HasSuffix(strings.ToLower(name), ".p12") || strings.HasSuffix(strings.ToLower(name), ".pfx") {
		cert, err = certificate.FromP12Bytes(b, pw)
	} else {
		cert, err = certificate.FromPemBytes(b, pw)
	}
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("file %q: not a usable push certificate: %w", name, err)
	}
	return cert, nil
}

func loadCAs(name string) (*x509.CertPool, error) {
	b, err := readFile(name)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("file %q holds no PEM certificate", name)
	}
	return pool, nil
}

func loadServiceAccount(name string) ([]byte, error) {
	b, err := readFile(name)
	if err != nil {
		return nil, err
	}
	var sa struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
		TokenURI    string `json:"token_uri"`
	}
	if err := json.Unmarshal(b, &sa); err != nil {
		return nil, fmt.Errorf("file %q is not JSON: %w", name, err)
	}
	if sa.Type != "service_account" {
		return nil, fmt.Errorf("file %q: type is %q, want \"service_account\"", name, sa.Type)
	}
	if sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, fmt.Errorf("file %q: client_email or private_key missing", name)
	}
	return b, nil
}

// apnsHost is the URL an endpoint setting names; an empty one is the
// environment's own (production, or the sandbox for apns.dev tokens).
func apnsHost(endpoint string, sandbox bool) (string, error) {
	if endpoint == "" && sandbox {
		endpoint = "sandbox"
	}
	switch endpoint {
	case "", "production":
		return apns2.HostProduction, nil
	case "sandbox":
		return apns2.HostDevelopment, nil
	}
	u, err := httpsURL(endpoint)
	if err != nil {
		return "", fmt.Errorf("%w (or production, sandbox)", err)
	}
	return u, nil
}

func httpsURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("%q is not an https URL", s)
	}
	return strings.TrimSuffix(s, "/"), nil
}
