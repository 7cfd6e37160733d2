// Package store keeps sipwake's device bindings sealed at rest and erases
// them on time.
//
// It owns the at-rest format: every value is sealed with AES-256-GCM under a
// key from a Keyring (the key id travels with the value, so keys rotate),
// every lookup key is an HMAC of the AOR under a random index key kept sealed
// in the store itself (so rotating the sealing key never changes an ID), a
// TTL index orders records by expiry, and a Sweeper erases expired records
// and compacts the file so freed pages do not keep ciphertext.
//
// It does not know what a binding means: Record.Data is the relay's opaque
// payload, and un-registering an expired binding upstream is the relay's job
// (the Sweeper hands it the erased records). Bolt is the embedded backend
// and Redis the shared one; both hold one codec (codec.go, header.go), so a
// value reads the same in either. Package storetest holds the behaviour
// suite every backend must pass.
package store
