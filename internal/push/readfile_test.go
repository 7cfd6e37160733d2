package push

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCredentialFileMustBeRegularAndSmall(t *testing.T) {
	if _, err := readFile("/dev/zero"); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("/dev/zero: %v", err)
	}
	big := filepath.Join(t.TempDir(), "big.p8")
	if err := os.WriteFile(big, make([]byte, maxCredentialFile+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readFile(big); err == nil || !strings.Contains(err.Error(), "larger than 1 MiB") {
		t.Fatalf("oversized file: %v", err)
	}
}
