package peertest

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Scenario returns the absolute path of a sipp scenario shipped in
// internal/peertest/testdata/sipp, e.g. Scenario(t, "register_auth.xml")
// (".xml" may be left off). It fails the test if the file does not exist.
func Scenario(t testing.TB, name string) string {
	t.Helper()
	if !strings.HasSuffix(name, ".xml") {
		name += ".xml"
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("peertest: cannot locate the peertest source directory")
	}
	p := filepath.Join(filepath.Dir(file), "testdata", "sipp", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("peertest: scenario %s: %v", name, err)
	}
	return p
}

// SippUser is one line of the injection file the register_* scenarios read.
type SippUser struct {
	User, Domain, Password string
	// Provider, PRID, Param fill pn-provider, pn-prid, pn-param in
	// register_auth.xml. None may contain ';', the file's separator (use
	// register_auth_params.xml and its contact_params key for free-form
	// Contact parameters).
	Provider, PRID, Param string
}

// RegisterInjection renders users as a SEQUENTIAL sipp injection file
// (SippOptions.Injection) for the register_* scenarios:
//
//	user;domain;[authentication username=user password=pw];provider;prid;param
//
// sipp 3.6 substitutes no [fieldN] inside its [authentication] keyword, but
// it does take the whole keyword from a field, hence field 2.
func RegisterInjection(users ...SippUser) string {
	var b strings.Builder
	b.WriteString("SEQUENTIAL\n")
	for _, u := range users {
		auth := "[authentication username=" + u.User + " password=" + u.Password + "]"
		b.WriteString(strings.Join([]string{u.User, u.Domain, auth, u.Provider, u.PRID, u.Param}, ";"))
		b.WriteByte('\n')
	}
	return b.String()
}
