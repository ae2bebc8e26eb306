//go:build linux

package watchdog

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// The test binary doubles as vigil for the process backend: run as
// `TESTBIN watchdog-supervisor ...` with supervisorEnv set, it is the
// supervisor; with agentEnv set, a stand-in agent (see agentMain).
const (
	supervisorEnv = "VIGIL_WATCHDOG_TEST_SUPERVISOR"
	agentEnv      = "VIGIL_WATCHDOG_TEST_AGENT"
)

func TestMain(m *testing.M) {
	if os.Getenv(supervisorEnv) == "1" && len(os.Args) > 1 && os.Args[1] == SupervisorCommand {
		os.Exit(SupervisorMain(os.Args[2:]))
	}
	if os.Getenv(agentEnv) == "1" {
		os.Exit(agentMain())
	}
	os.Setenv(supervisorEnv, "1")
	goleak.VerifyTestMain(m)
}
