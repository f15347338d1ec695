//go:build !unix

package inference

import (
	"os"
	"os/exec"
)

// Without process groups a tree cannot be killed reliably; Available says so.
const processGroupsSupported = false

func setProcessGroup(cmd *exec.Cmd) {}

func killGroup(pgid int, hard bool) {
	if p, err := os.FindProcess(pgid); err == nil {
		_ = p.Kill()
	}
}

func signalOf(ps *os.ProcessState) (int, bool) { return 0, false }
