package lab_test

import (
	"os"
	"testing"

	"github.com/vigil-ha/vigil/internal/lab"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeEnv) == "1" {
		// Re-executed by a lab as a stand-in for the vigil binary.
		os.Exit(fakeMain(os.Args[1:]))
	}
	os.Exit(lab.Main(m))
}
