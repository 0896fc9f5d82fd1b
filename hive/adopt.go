package hive

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"time"
)

// defaultAdoptPoll is how often an adopted worker is looked for in /proc.
const defaultAdoptPoll = 200 * time.Millisecond

// adopt returns the live process a previous hive started for spec, or nil
// after dropping a record that no longer matches one: a dead PID, a PID
// since reused (another start time), or a worker started as something else,
// which is asked to stop so that it does not serve next to its replacement.
func (s *execStarter) adopt(spec workerSpec, hash string) process {
	r, ok := s.state.record(spec.ID)
	if !ok {
		return nil
	}
	if r.PID == 0 {
		if r = s.state.resolveStart(r); r.PID == 0 {
			s.log.Info("a start of a worker that a previous hive began left no process; starting the worker anew", "worker_id", spec.ID)
			s.state.remove(spec.ID, 0)
			return nil
		}
		s.log.Info("found the process of a start that a previous hive began", "worker_id", spec.ID, "pid", r.PID)
		s.state.put(r)
	}
	log := s.log.With("worker_id", spec.ID, "pid", r.PID)
	start, zombie, err := procStat(r.PID)
	switch {
	case err != nil || zombie:
		log.Info("worker from a previous hive is gone; starting it anew")
	case start != r.StartTime:
		log.Info("the PID of a worker from a previous hive now belongs to another process; starting the worker anew")
	case r.SpecHash != hash:
		log.Warn("worker from a previous hive runs another command line; stopping it and starting the worker anew")
		if err := signalGroup(r.PID, stopSignal); err != nil {
			log.Warn("stop the old worker", "err", err)
		}
	default:
		log.Info("adopting worker from a previous hive")
		p := &adoptedProcess{id: spec.ID, pid: r.PID, start: start, state: s.state, every: s.pollEvery}
		// From the file's end: what it wrote while no hive ran stays in
		// the file, not logged; what came before, its hive logged.
		p.follow = s.follow(spec, r.PID, -1)
		return p
	}
	s.state.remove(spec.ID, r.PID)
	return nil
}

// adoptedProcess is a worker a previous hive started. It is not this
// hive's child, so Wait cannot reap it: it watches /proc until the process
// is gone (or a zombie, left for init to reap).
type adoptedProcess struct {
	id     string
	pid    int
	start  uint64
	state  *state
	every  time.Duration
	follow *logFollower // nil: none
}

func (p *adoptedProcess) PID() int { return p.pid }

func (p *adoptedProcess) Wait() error {
	every := p.every
	if every <= 0 {
		every = defaultAdoptPoll
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for p.alive() {
		<-t.C
	}
	p.follow.close()
	p.state.remove(p.id, p.pid)
	return errAdoptedExit
}

func (p *adoptedProcess) alive() bool {
	start, zombie, err := procStat(p.pid)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return false
	}
	return err != nil || (!zombie && start == p.start)
}

// Signal reaches the process group only while its leader is the process
// adopted. Kill reaches it even after: the kernel gives no new process a PID
// that still names a group, so the group is what the worker left behind.
func (p *adoptedProcess) Signal(sig os.Signal) error {
	if !p.alive() {
		return nil
	}
	return signalGroup(p.pid, sig)
}

func (p *adoptedProcess) Kill() error { return killGroup(p.pid) }
