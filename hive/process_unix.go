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

// signalGroup signals the process group the worker leads (Setpgid), which
// outlives the worker while anything it started is still running.
func signalGroup(p *os.Process, sig os.Signal) error {
	s, ok := sig.(syscall.Signal)
	if !ok {
		return fmt.Errorf("signal %v: not a unix signal", sig)
	}
	err := syscall.Kill(-p.Pid, s)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v to process group %d: %w", sig, p.Pid, err)
	}
	return nil
}

func killGroup(p *os.Process) error { return signalGroup(p, syscall.SIGKILL) }
