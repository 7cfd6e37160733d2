package pushtest_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"

	"github.com/sipwake/sipwake/internal/push/pushtest"
)

// fcmAnswer is an FCM HTTP v1 send's answer.
type fcmAnswer struct {
	status int
	Name   string
	Error  struct {
		Code    int
		Message string
		Status  string
		Details []struct {
			Type      string `json:"@type"`
			ErrorCode string
		}
	}
}

// fcmSend sends a data-only message to tok the way FCM HTTP v1 clients do:
// an OAuth access token from the service account, then messages:send.
func fcmSend(t *testing.T, f *pushtest.FCM, tok string) fcmAnswer {
	t.Helper()
	return fcmSendData(t, f, tok, map[string]string{"kind": "call"})
}

// fcmSendData is fcmSend with the message's data.
func fcmSendData(t *testing.T, f *pushtest.FCM, tok string, data map[string]string) fcmAnswer {
	t.Helper()
	ca, err := os.ReadFile(f.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	sa, err := os.ReadFile(f.CredentialsFile)
	if err != nil {
		t.Fatal(err)
	}
	jwt, err := google.JWTConfigFromJSON(sa, "https://www.googleapis.com/auth/firebase.messaging")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client := jwt.Client(context.WithValue(ctx, oauth2.HTTPClient, hc))
	body, _ := json.Marshal(map[string]any{"message": map[string]any{
		"token": tok, "data": data, "android": map[string]string{"priority": "high"},
	}})
	res, err := client.Post(f.URL+"/v1/projects/"+f.ProjectID+"/messages:send", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	a := fcmAnswer{status: res.StatusCode}
	if err := json.NewDecoder(res.Body).Decode(&a); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestFCMRefuses(t *testing.T) {
	f := pushtest.NewFCM(t)
	if f.SenderID == "" || f.App("android").FCM.SenderID != f.SenderID {
		t.Fatalf("sender id %q, app's %q", f.SenderID, f.App("android").FCM.SenderID)
	}
	other := pushtest.FCMToken(2)
	f.BindToken(other, "999999999999")
	cases := []struct {
		name      string
		tok       string
		status    int
		canonical string
		code, msg string
	}{
		{"issued", f.Token(1), 200, "", "", ""},
		{"issued to another sender", other, 403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"},
		{"not issued", pushtest.FCMToken(3), 400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
			"The registration token is not a valid FCM registration token"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := fcmSend(t, f, c.tok)
			if a.status != c.status {
				t.Fatalf("status %d, want %d (%+v)", a.status, c.status, a.Error)
			}
			if c.status == 200 {
				if a.Name == "" {
					t.Errorf("no message name in the answer")
				}
				return
			}
			e := a.Error
			if e.Code != c.status || e.Status != c.canonical || e.Message != c.msg || len(e.Details) != 1 ||
				e.Details[0].ErrorCode != c.code || e.Details[0].Type != "type.googleapis.com/google.firebase.fcm.v1.FcmError" {
				t.Errorf("error %+v, want %d %s %s %q", e, c.status, c.canonical, c.code, c.msg)
			}
			if ps := f.PushesTo(c.tok); len(ps) != 1 || ps[0].Status != c.status || ps[0].Reason != c.code {
				t.Errorf("recorded %+v", ps)
			}
		})
	}
}

// FCM takes at most 4096 bytes of data (keys and values).
func TestFCMDataLimit(t *testing.T) {
	f := pushtest.NewFCM(t)
	tok := f.Token(1)
	if a := fcmSendData(t, f, tok, map[string]string{"k": strings.Repeat("x", 4095)}); a.status != http.StatusOK {
		t.Fatalf("4096 bytes of data: %d %+v", a.status, a.Error)
	}
	a := fcmSendData(t, f, tok, map[string]string{"k": strings.Repeat("x", 4096)})
	if a.status != http.StatusBadRequest || a.Error.Status != "INVALID_ARGUMENT" {
		t.Fatalf("4097 bytes of data: %d %+v", a.status, a.Error)
	}
}
