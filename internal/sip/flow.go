package sip

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
)

// flowParam carries, in sipwake's device-facing Record-Route, the flow
// token of the connection the device reached sipwake on. Requests later in
// the dialog toward the device go over that flow, never to an address a
// caller could name.
const flowParam = "sw-flow"

// FlowKeyLabel names the key flow tokens are sealed under (Options.FlowKey),
// derived from the store's secret, so every node of a cluster opens the
// tokens of the others.
const FlowKeyLabel = "sip flow token v1"

// A flow is the connection a device reached sipwake on (RFC 5626 §5.2): the
// transport and the device's source address.
type flow struct {
	transport string // lower case: udp, tcp, tls, ws, wss
	source    string // ip:port
}

// errBadFlowToken: the token was not made by sipwake for this dialog
// (forged, edited, or replayed from another dialog).
var errBadFlowToken = errors.New("flow token does not verify")

// flowTokens seals flows into the opaque tokens sipwake puts in Record-
// Route: AES-256-GCM over (transport, source), bound to the dialog's
// Call-ID, so a caller reads no device address in them, cannot forge or
// edit one, and a token copied into another dialog does not open.
type flowTokens struct{ aead cipher.AEAD }

func newFlowTokens(key []byte) (*flowTokens, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &flowTokens{aead: aead}, nil
}

// flowTokenVersion leads every sealed token, so the format can change.
const flowTokenVersion = 1

func flowAAD(callID string) []byte { return []byte("sipwake flow\x00" + callID) }

// seal makes the token of f for the dialog callID: base64url (no padding,
// all legal in a URI parameter) of version | nonce | ciphertext+tag.
func (t *flowTokens) seal(f flow, callID string) string {
	plain := []byte(f.transport + " " + f.source)
	out := make([]byte, 1+t.aead.NonceSize(), 1+t.aead.NonceSize()+len(plain)+t.aead.Overhead())
	out[0] = flowTokenVersion
	_, _ = rand.Read(out[1:])
	out = t.aead.Seal(out, out[1:1+t.aead.NonceSize()], plain, flowAAD(callID))
	return base64.RawURLEncoding.EncodeToString(out)
}

// open verifies a token for the dialog callID and returns its flow.
func (t *flowTokens) open(token, callID string) (flow, error) {
	raw, err := base64.RawURLEncoding.DecodeString(token)
	n := t.aead.NonceSize()
	if err != nil || len(raw) < 1+n+t.aead.Overhead() || raw[0] != flowTokenVersion {
		return flow{}, errBadFlowToken
	}
	plain, err := t.aead.Open(nil, raw[1:1+n], raw[1+n:], flowAAD(callID))
	if err != nil {
		return flow{}, errBadFlowToken
	}
	transport, source, ok := strings.Cut(string(plain), " ")
	if !ok || transport == "" || source == "" {
		return flow{}, errBadFlowToken
	}
	return flow{transport: transport, source: source}, nil
}
