package lab

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// WriteOwnerForTest records pid as the owner of lab id, as a dead owner.
func WriteOwnerForTest(t *testing.T, id string, pid int) {
	t.Helper()
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(ownerDir, id)
	if err := os.WriteFile(p, []byte(fmt.Sprintf("%d 1\n", pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(p) })
}
