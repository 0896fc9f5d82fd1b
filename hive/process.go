package hive

import (
	"cmp"
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
// so that stopping one reaches anything it started. With a state it records
// each process there, and a start of a worker that a previous hive left
// running adopts that process instead; with a data directory each worker
// writes to a log file there, which the hive follows into its own log
// (without one, workers write to the hive's stderr).
type execStarter struct {
	state     *state
	log       *slog.Logger
	workerLog *slog.Logger // where the workers' lines go, without the hive's component
	// pollEvery is how often an adopted process, not a child, is looked for.
	pollEvery time.Duration
	dataDir   string        // where the worker logs are; "": none
	logMax    int64         // a worker log past this is emptied once read
	logEvery  time.Duration // how often worker logs are read; 0: defaultLogPoll
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
	out := os.Stderr
	if s.dataDir != "" {
		f, err := createWorkerLog(s.dataDir, spec.ID)
		if err != nil {
			s.log.Warn("the worker writes to the hive's stderr", "worker_id", spec.ID, "err", err)
		} else {
			out = f
			defer f.Close() // the child has its own copy once started
		}
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	// A record without a PID says a start is under way, so that a hive
	// that dies before the PID is recorded does not leave the next one to
	// start a duplicate: the next hive looks for the process by its command
	// line, which names this hive and this worker. Simpler than matching
	// registry keys, which a worker writes only once its model is loaded.
	started := time.Now().UTC()
	s.state.put(workerRecord{ID: spec.ID, Model: spec.Model, SpecHash: hash, Started: started})
	if err := cmd.Start(); err != nil {
		s.state.remove(spec.ID, 0)
		return nil, fmt.Errorf("start worker %s: %w", spec.ID, err)
	}
	pid := cmd.Process.Pid
	p := &execProcess{cmd: cmd, id: spec.ID, state: s.state}
	if s.state != nil {
		start, _, err := procStat(pid)
		if err != nil {
			s.log.Warn("read the worker's start time; a restarted hive will not adopt it", "worker_id", spec.ID, "err", err)
			s.state.remove(spec.ID, 0)
		} else {
			s.state.put(workerRecord{
				ID: spec.ID, Model: spec.Model, PID: pid, StartTime: start,
				SpecHash: hash, Started: started,
			})
		}
	}
	if out != os.Stderr {
		p.follow = s.follow(spec, pid, 0)
	}
	return p, nil
}

// follow re-emits what process pid of spec writes to its log file from
// offset from (-1: the end), or returns nil, saying why.
func (s *execStarter) follow(spec workerSpec, pid int, from int64) *logFollower {
	log := cmp.Or(s.workerLog, s.log).With("worker_id", spec.ID, "model", spec.Model, "pid", pid)
	l, err := followWorkerLog(workerLogPath(s.dataDir, spec.ID), from, log, s.logMax, cmp.Or(s.logEvery, defaultLogPoll))
	if err != nil {
		log.Warn("the worker's output is not in the hive's log", "err", err)
		return nil
	}
	return l
}

type execProcess struct {
	cmd    *exec.Cmd
	id     string
	state  *state
	follow *logFollower // nil: none
}

func (p *execProcess) PID() int { return p.cmd.Process.Pid }

func (p *execProcess) Wait() error {
	err := p.cmd.Wait()
	p.follow.close()
	p.state.remove(p.id, p.cmd.Process.Pid)
	return err
}

func (p *execProcess) Signal(sig os.Signal) error { return signalGroup(p.cmd.Process.Pid, sig) }
func (p *execProcess) Kill() error                { return killGroup(p.cmd.Process.Pid) }

// errAdoptedExit is how an adopted process ended: only its parent (init,
// after the hive that started it died) learns its status.
var errAdoptedExit = errors.New("exited (status unknown: adopted process)")
