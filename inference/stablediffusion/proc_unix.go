//go:build unix

package stablediffusion

import (
	"os/exec"
	"syscall"
)

// setProcessGroup puts the worker in its own process group so that a kill
// reaches any helper process it started.
func setProcessGroup(cmd *exec.Cmd) { cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} }

// killTree kills the worker's process group.
func killTree(cmd *exec.Cmd) {
	if cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
}

// killPID kills the process group led by pid.
func killPID(pid int) { _ = syscall.Kill(-pid, syscall.SIGKILL) }
