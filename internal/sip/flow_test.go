package sip

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

func TestFlowTokens(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	tokens, err := newFlowTokens(key)
	if err != nil {
		t.Fatal(err)
	}
	f := flow{transport: "tcp", source: "203.0.113.9:50123"}
	tok := tokens.seal(f, "call-1@example")
	if strings.Contains(tok, "203.0.113.9") || strings.Contains(tok, "50123") {
		t.Fatalf("token %q shows the address", tok)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	if bytes.Contains(raw, []byte("203.0.113.9")) {
		t.Fatalf("token %q holds the address in clear", tok)
	}
	if got, err := tokens.open(tok, "call-1@example"); err != nil || got != f {
		t.Fatalf("open: %+v, %v", got, err)
	}
	if tokens.seal(f, "call-1@example") == tok {
		t.Fatal("two tokens of one flow are equal: they can be linked")
	}
	other, _ := newFlowTokens(bytes.Repeat([]byte{8}, 32))
	edited := []byte(tok)
	edited[len(edited)/2] ^= 1
	for name, open := range map[string]func() (flow, error){
		"another dialog":   func() (flow, error) { return tokens.open(tok, "call-2@example") },
		"another key":      func() (flow, error) { return other.open(tok, "call-1@example") },
		"edited":           func() (flow, error) { return tokens.open(string(edited), "call-1@example") },
		"prefixed":         func() (flow, error) { return tokens.open("A"+tok, "call-1@example") },
		"clear address":    func() (flow, error) { return tokens.open("203.0.113.9:50123", "call-1@example") },
		"empty":            func() (flow, error) { return tokens.open("", "call-1@example") },
		"truncated":        func() (flow, error) { return tokens.open(tok[:20], "call-1@example") },
		"not base64url":    func() (flow, error) { return tokens.open(tok+"=", "call-1@example") },
		"version unknown!": func() (flow, error) { return tokens.open("Ag"+tok[2:], "call-1@example") },
	} {
		if got, err := open(); err == nil {
			t.Errorf("%s: opened to %+v", name, got)
		}
	}
}

func FuzzFlowTokenOpen(f *testing.F) {
	tokens, _ := newFlowTokens(bytes.Repeat([]byte{7}, 32))
	f.Add(tokens.seal(flow{transport: "tls", source: "198.51.100.1:4000"}, "c"), "c")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, tok, callID string) {
		_, _ = tokens.open(tok, callID)
	})
}
