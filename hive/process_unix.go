//go:build unix

package hive

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// stopSignal asks a worker to drain and exit.
var stopSignal os.Signal = syscall.SIGTERM

// reloadSignal asks a worker to reload its configuration.
var reloadSignal os.Signal = syscall.SIGHUP

// signalGroup signals the process group the worker leads (Setpgid), which
// outlives the worker while anything it started is still running.
func signalGroup(pid int, sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("signal %v: not a unix signal", sig)
	}
	err := syscall.Kill(-pid, s)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to process group %d: %w", sig, pid, err)
	}
	return nil
}

func killGroup(pid int) error { return signalGroup(pid, syscall.SIGKILL) }
