package pushtest_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

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

// fcmSend sends a data-only message to tok through the fake's own app
// config, the way FCM HTTP v1 clients do.
func fcmSend(t *testing.T, f *pushtest.FCM, tok string) fcmAnswer {
	t.Helper()
	return fcmSendData(t, f, tok, map[string]string{"kind": "call"})
}

// fcmSendData is fcmSend with the message's data.
func fcmSendData(t *testing.T, f *pushtest.FCM, tok string, data map[string]string) fcmAnswer {
	t.Helper()
	status, body := pushtest.SendFCM(t, f.App("android").FCM, tok, data)
	a := fcmAnswer{status: status}
	if err := json.Unmarshal(body, &a); err != nil {
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
