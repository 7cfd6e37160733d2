package push_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sipwake/sipwake/internal/push"
	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// Certificate auth with a .p12 (PKCS#12) file and its password, the form
// Apple's portal exports: converted from the fake's client certificate
// with openssl, loaded by apns2, accepted by the fake.
func TestAPNsCertificateAuthP12(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not found; install Debian package \"openssl\"")
	}
	f := pushtest.NewAPNs(t)
	dir := t.TempDir()
	p12, pwFile := filepath.Join(dir, "voip.p12"), filepath.Join(dir, "voip.pass")
	const pw = "p12-Secret"
	out, err := exec.Command(openssl, "pkcs12", "-export", "-in", f.ClientCertFile, "-out", p12,
		"-passout", "pass:"+pw, "-certpbe", "PBE-SHA1-3DES", "-keypbe", "PBE-SHA1-3DES", "-macalg", "sha1").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkcs12: %v\n%s", err, out)
	}
	if err := os.WriteFile(pwFile, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := f.CertApp("ios-p12")
	app.APNs.CertFile, app.APNs.PasswordFile = p12, pwFile
	d, err := push.New(push.Config{Apps: []push.AppConfig{app}}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if res := d.Send(ctxFor(t, 5*time.Second), f.Target(f.VoIPToken(2)), callMsg()); res.Outcome != push.Delivered {
		t.Fatalf("result %+v (pushes %+v)", res, f.Pushes())
	}
}
