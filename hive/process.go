package hive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"time"
)

// ExitCodeCannotStart is the status `rbee worker` exits with when it can
// never start as configured (an unreadable or unsupported model file, bad
// flags): EX_CONFIG of sysexits.h. The hive does not restart such a worker.
const ExitCodeCannotStart = 78

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
// so that stopping one reaches anything it started, writing to the hive's
// stderr. With a state it records each process there, and a start of a
// worker that a previous hive left running adopts that process instead.
type execStarter struct {
	state *state
	log   *slog.Logger
	// pollEvery is how often an adopted process, not a child, is looked for.
	pollEvery time.Duration
}

func (s *execStarter) start(ctx context.Context, spec workerSpec) (process, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	hash := specHash(spec)
	if p := s.adopt(spec, hash); p != nil {
		return p, nil
	}
	cmd := exec.Command(spec.Exe, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	// An *os.File is handed to the child as is: no copying goroutine, so
	// Wait returns when the process exits even if a grandchild holds the fd,
	// and a worker whose hive died has no broken pipe to write to.
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	p := &execProcess{cmd: cmd, id: spec.ID, state: s.state}
	if s.state != nil {
		start, _, err := procStat(cmd.Process.Pid)
		if err != nil {
			s.log.Warn("read the worker's start time; a restarted hive will not adopt it", "worker_id", spec.ID, "err", err)
		} else {
			s.state.put(workerRecord{
				ID: spec.ID, Model: spec.Model, PID: cmd.Process.Pid, StartTime: start,
				SpecHash: hash, Started: time.Now().UTC(),
			})
		}
	}
	return p, nil
}

type execProcess struct {
	cmd   *exec.Cmd
	id    string
	state *state
}

func (p *execProcess) PID() int { return p.cmd.Process.Pid }

func (p *execProcess) Wait() error {
	err := p.cmd.Wait()
	p.state.remove(p.id, p.cmd.Process.Pid)
	return err
}

func (p *execProcess) Signal(sig os.Signal) error { return signalGroup(p.cmd.Process.Pid, sig) }
func (p *execProcess) Kill() error                { return killGroup(p.cmd.Process.Pid) }

// errAdoptedExit is how an adopted process ended: only its parent (init,
// after the hive that started it died) learns its status.
var errAdoptedExit = errors.New("exited (status unknown: adopted process)")
