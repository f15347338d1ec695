//go:build unix

package inference

import (
	"os"
	"os/exec"
	"syscall"
)

const processGroupsSupported = true

// setProcessGroup makes the child the leader of a new process group so the
// whole tree can be signalled at once.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// killGroup signals every process of group pgid: SIGKILL when hard, else
// SIGTERM. A group that is already gone is not an error.
func killGroup(pgid int, hard bool) {
	sig := syscall.SIGTERM
	if hard {
		sig = syscall.SIGKILL
	}
	_ = syscall.Kill(-pgid, sig)
}

// signalOf returns the signal that ended the process, if one did.
func signalOf(ps *os.ProcessState) (int, bool) {
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() {
		return 0, false
	}
	return int(ws.Signal()), true
}
