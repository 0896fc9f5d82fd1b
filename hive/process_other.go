//go:build !unix

package hive

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// stopSignal asks a worker to stop. Without Unix signals, sending it fails
// and the supervisor kills the worker at once.
var stopSignal os.Signal = os.Interrupt

// reloadSignal asks a worker to reload its configuration; without Unix
// signals sending it fails, and the worker keeps the one it has.
var reloadSignal os.Signal = syscall.SIGHUP

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(pid int, sig os.Signal) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("signal %v to process %d: %w", sig, pid, err)
	}
	if err := p.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %v to process %d: %w", sig, p.Pid, err)
	}
	return nil
}

func killGroup(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return fmt.Errorf("kill process %d: %w", pid, err)
	}
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill process %d: %w", p.Pid, err)
	}
	return nil
}
