package hive

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
)

// process is a started worker process, the part of it the supervisor uses.
type process interface {
	PID() int
	// Wait blocks until the process exits and says how; it is called once.
	Wait() error
	// Signal sends sig to the process and to whatever it started.
	Signal(sig os.Signal) error
	// Kill kills the process and whatever it started; killing what is already
	// gone is not an error.
	Kill() error
}

// starter starts worker processes.
type starter interface {
	start(ctx context.Context, spec workerSpec) (process, error)
}

// workerSpec is everything needed to start one worker process.
type workerSpec struct {
	ID    string
	Model string
	Exe   string
	Args  []string
	Env   []string // added to the hive's own environment
}

// execStarter runs workers as child processes, each in its own process group
// so that stopping one reaches anything it started, and writing to the hive's
// stderr. Its run method must be running for start to succeed.
type execStarter struct {
	forks chan fork
}

type fork struct {
	cmd  *exec.Cmd
	done chan error
}

func newExecStarter() *execStarter { return &execStarter{forks: make(chan fork)} }

// run starts the processes asked for until ctx ends, all from one OS
// thread that it keeps locked. Linux sends Pdeathsig when the thread that
// forked a child exits, not the process, and Go ends a thread only when a
// goroutine locked to it exits: no other goroutine can do that to this one.
// ctx must outlive every child.
func (s *execStarter) run(ctx context.Context) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-s.forks:
			f.done <- f.cmd.Start()
		}
	}
}

func (s *execStarter) start(ctx context.Context, spec workerSpec) (process, error) {
	cmd := exec.Command(spec.Exe, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	// An *os.File is handed to the child as is: no copying goroutine, so
	// Wait returns when the process exits even if a grandchild holds the fd.
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = sysProcAttr()
	f := fork{cmd: cmd, done: make(chan error, 1)}
	select {
	case s.forks <- f:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if err := <-f.done; err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	return &execProcess{cmd: cmd}, nil
}

type execProcess struct{ cmd *exec.Cmd }

func (p *execProcess) PID() int                   { return p.cmd.Process.Pid }
func (p *execProcess) Wait() error                { return p.cmd.Wait() }
func (p *execProcess) Signal(sig os.Signal) error { return signalGroup(p.cmd.Process, sig) }
func (p *execProcess) Kill() error                { return killGroup(p.cmd.Process) }
