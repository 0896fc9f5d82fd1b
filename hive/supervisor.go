package hive

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/schemas"
)

// WorkerState is where a worker is in its life.
type WorkerState string

// The states. A worker goes pending → running, then back and forth between
// running and backoff as it crashes and restarts, and ends stopped (the hive
// stopped it) or failed (it used up its restarts).
const (
	StatePending  WorkerState = "pending"
	StateRunning  WorkerState = "running"
	StateBackoff  WorkerState = "backoff"
	StateStopping WorkerState = "stopping"
	StateStopped  WorkerState = "stopped"
	StateFailed   WorkerState = "failed"
)

// WorkerStatus is a snapshot of one supervised worker.
type WorkerStatus struct {
	ID        string
	Model     string
	PID       int // 0 while no process runs
	State     WorkerState
	Restarts  int       // starts after the first
	StartedAt time.Time // of the current or last process
	LastExit  string    // how the last process ended ("exit status 1"), "" before any exit
}

// worker supervises one worker process: it starts it, restarts it by the
// policy when it exits, and stops it (signal, grace, kill) when its context
// ends.
type worker struct {
	spec     workerSpec
	starter  starter
	policy   RestartPolicy
	grace    time.Duration
	log      *slog.Logger
	restarts prometheus.Counter
	running  prometheus.Gauge
	audit    func(schemas.AuditEvent) // records what happened to the process; nil: nowhere

	mu     sync.Mutex
	status WorkerStatus
}

func (w *worker) snapshot() WorkerStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

func (w *worker) update(f func(*WorkerStatus)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f(&w.status)
}

func (w *worker) setState(s WorkerState) { w.update(func(st *WorkerStatus) { st.State = s }) }

// record sends an audit event about this worker's process.
func (w *worker) record(typ string, pid int, exit error) {
	if w.audit == nil {
		return
	}
	ev := schemas.AuditEvent{Type: typ, WorkerID: w.spec.ID, Model: w.spec.Model, PID: pid, Restarts: w.snapshot().Restarts}
	if exit != nil || typ == schemas.AuditWorkerExited || typ == schemas.AuditWorkerStopped {
		ev.Exit = describeExit(exit)
	}
	w.audit(ev)
}

// run supervises until ctx ends and the process is gone, or until the worker
// has used up its restarts.
func (w *worker) run(ctx context.Context) {
	tracker := newRestartTracker(w.policy)
	for {
		began := time.Now()
		p, err := w.starter.start(ctx, w.spec)
		switch {
		case err != nil && ctx.Err() != nil:
			w.setState(StateStopped)
			return
		case err != nil:
			w.log.Error("start worker failed", "err", err)
			w.update(func(st *WorkerStatus) { st.LastExit = err.Error() })
		case w.supervise(ctx, p):
			return
		}
		delay, ok := tracker.next(time.Now(), time.Since(began))
		if !ok {
			w.setState(StateFailed)
			w.record(schemas.AuditWorkerFailed, 0, nil)
			w.log.Error("worker restarted too often; leaving it down",
				"max_restarts", w.policy.MaxRestarts, "interval", w.policy.Interval)
			return
		}
		w.setState(StateBackoff)
		w.log.Info("restarting worker", "delay", delay)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			w.setState(StateStopped)
			return
		case <-t.C:
		}
		w.restarts.Inc()
		w.update(func(st *WorkerStatus) { st.Restarts++ })
	}
}

// supervise watches a started process until it exits (false) or until ctx
// ends and it has been stopped (true).
func (w *worker) supervise(ctx context.Context, p process) bool {
	pid := p.PID()
	log := w.log.With("pid", pid)
	began := time.Now()
	w.update(func(st *WorkerStatus) {
		st.PID, st.State, st.StartedAt = pid, StateRunning, began
	})
	w.running.Inc()
	log.Info("worker started")
	w.record(schemas.AuditWorkerStarted, pid, nil)
	exited := make(chan error, 1)
	go func() { exited <- p.Wait() }()

	select {
	case err := <-exited:
		w.gone(p, log, StateBackoff, err)
		log.Warn("worker exited", "exit", describeExit(err), "ran", time.Since(began).Round(time.Millisecond))
		w.record(schemas.AuditWorkerExited, pid, err)
		return false
	case <-ctx.Done():
		w.stop(p, log, exited)
		return true
	}
}

// stop asks the process to exit, and kills it if it has not within the grace
// period: Nomad's executor shutdown.
func (w *worker) stop(p process, log *slog.Logger, exited <-chan error) {
	w.setState(StateStopping)
	log.Info("stopping worker", "signal", stopSignal, "grace", w.grace)
	grace := w.grace
	if err := p.Signal(stopSignal); err != nil {
		log.Warn("cannot signal worker; killing it", "err", err)
		grace = 0
	}
	t := time.NewTimer(grace)
	defer t.Stop()
	var err error
	select {
	case err = <-exited:
	case <-t.C:
		if grace > 0 {
			log.Warn("worker still running after the grace period; killing it", "grace", grace)
		}
		if kerr := p.Kill(); kerr != nil {
			log.Error("kill worker", "err", kerr)
		}
		err = <-exited
	}
	w.gone(p, log, StateStopped, err)
	log.Info("worker stopped", "exit", describeExit(err))
	w.record(schemas.AuditWorkerStopped, p.PID(), err)
}

// gone records that the process has exited and kills whatever it left
// running in its process group.
func (w *worker) gone(p process, log *slog.Logger, next WorkerState, err error) {
	w.running.Dec()
	if kerr := p.Kill(); kerr != nil {
		log.Warn("kill what the worker left behind", "err", kerr)
	}
	w.update(func(st *WorkerStatus) {
		st.PID, st.State, st.LastExit = 0, next, describeExit(err)
	})
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
