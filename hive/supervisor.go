package hive

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/schemas"
)

// WorkerState is where a worker is in its life.
type WorkerState string

// The states. A worker goes pending → running, then back and forth between
// running and backoff as it crashes and restarts, and ends stopped (the hive
// stopped it) or failed (it cannot start, or the restart policy gave up).
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
	Adopted   bool      // the current process was started by a previous hive
	LastExit  string    // how the last process ended ("exit status 1"), "" before any exit
	ExitKind  string    // schemas.Exit*: what LastExit means; "" before any exit
	Reason    string    // why the worker is failed; "" unless it is
	FailedAt  time.Time // when it became failed
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

	// The rest is optional: unit tests of the supervisor leave it out.
	stops     *stopCounters              // how stops ended
	forget    func(workerID string)      // drops a force-killed worker's registry key
	hung      hungWatcher                // tells of a live worker that stopped working
	skipGrace <-chan struct{}            // closed: stop kills at once
	onFail    func(schemas.FailedWorker) // told when the worker becomes failed
	admit     func() error               // the preflight before a restart

	mu     sync.Mutex
	status WorkerStatus
	live   process // the process running now; nil between processes
}

// stopCounters count the workers a shutdown stopped, by how.
type stopCounters struct {
	graceful, forced prometheus.Counter
	tally            *supervision // the hive's totals, for its hive.stopped event; nil: none
}

func (c *stopCounters) count(forced bool) {
	if forced {
		c.forced.Inc()
	} else {
		c.graceful.Inc()
	}
	if c.tally != nil {
		c.tally.mu.Lock()
		defer c.tally.mu.Unlock()
		if forced {
			c.tally.forced++
		} else {
			c.tally.graceful++
		}
	}
}

// hungWatcher sends on hung, once, why the worker process pid has stopped
// working although it is alive, and returns when ctx ends.
type hungWatcher interface {
	watch(ctx context.Context, workerID string, pid int, hung chan<- hang)
}

// hang is why a live worker process is to be killed.
type hang struct {
	reason string
	// loading: it never got ready, so its run counts as a failed start,
	// however long it took.
	loading bool
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
func (w *worker) record(typ string, pid int, exit error, reason string) {
	if w.audit == nil {
		return
	}
	ev := schemas.AuditEvent{Type: typ, WorkerID: w.spec.ID, Model: w.spec.Model, PID: pid, Restarts: w.snapshot().Restarts, Reason: reason}
	if exit != nil || typ == schemas.AuditWorkerExited || typ == schemas.AuditWorkerStopped {
		ev.Exit, ev.ExitKind = describeExit(exit), exitKind(exit)
	}
	w.audit(ev)
}

// run supervises until ctx ends and the process is gone, or until the worker
// fails: it cannot start, or the restart policy gives up on it.
func (w *worker) run(ctx context.Context) {
	tracker := newRestartTracker(w.policy)
	for {
		began := time.Now()
		p, err := w.starter.start(ctx, w.spec)
		neverReady := false
		switch {
		case err != nil && ctx.Err() != nil:
			w.setState(StateStopped)
			return
		case err != nil:
			w.log.Error("start worker failed", "err", err)
			w.update(func(st *WorkerStatus) { st.LastExit, st.ExitKind = err.Error(), schemas.ExitCrash })
		default:
			stopped, exit, loading := w.supervise(ctx, p)
			if stopped {
				return
			}
			if exitKind(exit) == schemas.ExitCannotStart {
				w.fail(fmt.Sprintf("cannot start (%s): the worker reported a permanent error, see its log", describeExit(exit)))
				return
			}
			neverReady = loading
		}
		ran := time.Since(began)
		if neverReady {
			ran = 0 // a failed start, however long it took: it resets no backoff
		}
		delay, giveUp := tracker.next(time.Now(), ran)
		if giveUp != "" {
			w.fail(fmt.Sprintf("%s; last: %s", giveUp, w.snapshot().LastExit))
			return
		}
		w.log.Info("restarting worker", "delay", delay)
		if !w.backoff(ctx, delay) {
			return
		}
		// A restart is a start: the machine may have no room for the
		// worker any more. A refusal is the machine's, not the worker's
		// failure: it waits as a failure would, and counts for no breaker.
		for w.admit != nil {
			err := w.admit()
			if err == nil {
				break
			}
			delay := tracker.refused()
			w.log.Info("preflight refused the restart; trying again", "code", schemas.CodeOf(err), "delay", delay)
			if !w.backoff(ctx, delay) {
				return
			}
		}
		w.restarts.Inc()
		w.update(func(st *WorkerStatus) { st.Restarts++ })
	}
}

// backoff waits delay, in StateBackoff, and reports whether ctx is still
// alive; when it is not the worker is stopped.
func (w *worker) backoff(ctx context.Context, delay time.Duration) bool {
	w.setState(StateBackoff)
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		w.setState(StateStopped)
		return false
	case <-t.C:
		return true
	}
}

// fail leaves the worker down for good, saying why.
func (w *worker) fail(reason string) {
	now := time.Now().UTC()
	w.update(func(st *WorkerStatus) { st.State, st.Reason, st.FailedAt = StateFailed, reason, now })
	w.log.Error("worker failed; not restarting it", "reason", reason)
	w.record(schemas.AuditWorkerFailed, 0, nil, reason)
	if w.onFail != nil {
		w.onFail(schemas.FailedWorker{WorkerID: w.spec.ID, Model: w.spec.Model, Reason: reason, Since: now})
	}
}

// supervise watches a started process until it exits or is found hung
// (false, with how it ended, and whether it was killed for never getting
// ready) or until ctx ends and it has been stopped (true).
func (w *worker) supervise(ctx context.Context, p process) (stopped bool, exit error, loading bool) {
	pid := p.PID()
	_, adopted := p.(*adoptedProcess)
	log := w.log.With("pid", pid)
	began := time.Now()
	w.mu.Lock()
	st := &w.status
	st.PID, st.State, st.StartedAt, st.Adopted = pid, StateRunning, began, adopted
	w.live = p
	w.mu.Unlock()
	w.running.Inc()
	if adopted {
		log.Info("worker adopted")
		w.record(schemas.AuditWorkerAdopted, pid, nil, "")
	} else {
		log.Info("worker started")
		w.record(schemas.AuditWorkerStarted, pid, nil, "")
	}
	exited := make(chan error, 1)
	go func() { exited <- p.Wait() }()
	hung := make(chan hang, 1)
	if w.hung != nil {
		hctx, stopWatch := context.WithCancel(ctx)
		var watching sync.WaitGroup
		watching.Go(func() { w.hung.watch(hctx, w.spec.ID, pid, hung) })
		defer func() {
			stopWatch()
			watching.Wait()
		}()
	}

	select {
	case err := <-exited:
		w.gone(p, log, StateBackoff, err)
		log.Warn("worker exited", "exit", describeExit(err), "exit_kind", exitKind(err), "ran", time.Since(began).Round(time.Millisecond))
		w.record(schemas.AuditWorkerExited, pid, err, "")
		return false, err, false
	case h := <-hung:
		log.Warn("worker hung; killing it", "reason", h.reason)
		if kerr := p.Kill(); kerr != nil {
			log.Error("kill hung worker", "err", kerr)
		}
		err := <-exited
		w.gone(p, log, StateBackoff, err)
		w.record(schemas.AuditWorkerHung, pid, err, h.reason)
		if w.forget != nil {
			w.forget(w.spec.ID)
		}
		return false, err, h.loading
	case <-ctx.Done():
		w.stop(p, log, exited)
		return true, nil, false
	}
}

// stop asks the process to exit, and kills it if it has not within the grace
// period (or at once when skipGrace is closed): Nomad's executor shutdown.
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
	forced := false
	select {
	case err = <-exited:
	case <-t.C:
		forced = true
	case <-w.skipGrace:
		forced = true
		log.Warn("grace skipped; killing worker")
	}
	if forced {
		if grace > 0 {
			log.Warn("worker still running after the grace period; killing it", "grace", grace)
		}
		if kerr := p.Kill(); kerr != nil {
			log.Error("kill worker", "err", kerr)
		}
		err = <-exited
	}
	w.gone(p, log, StateStopped, err)
	reason := "exited within the grace period"
	if forced {
		reason = "force-killed"
		// A killed worker could not delete its own key: the registry
		// would list it until the key's TTL.
		if w.forget != nil {
			w.forget(w.spec.ID)
		}
	}
	if w.stops != nil {
		w.stops.count(forced)
	}
	log.Info("worker stopped", "exit", describeExit(err), "forced", forced)
	w.record(schemas.AuditWorkerStopped, p.PID(), err, reason)
}

// gone records that the process has exited and kills whatever it left
// running in its process group.
func (w *worker) gone(p process, log *slog.Logger, next WorkerState, err error) {
	w.running.Dec()
	if kerr := p.Kill(); kerr != nil {
		log.Warn("kill what the worker left behind", "err", kerr)
	}
	w.mu.Lock()
	st := &w.status
	st.PID, st.State, st.LastExit, st.ExitKind = 0, next, describeExit(err), exitKind(err)
	w.live = nil
	w.mu.Unlock()
}

// reload asks the worker's process, if one runs, to reload its
// configuration, and reports whether one was asked.
func (w *worker) reload() (bool, error) {
	w.mu.Lock()
	p := w.live
	w.mu.Unlock()
	if p == nil {
		return false, nil
	}
	return true, p.Signal(reloadSignal)
}

func describeExit(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// exitKind classifies how a process ended.
func exitKind(err error) string {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return schemas.ExitClean
	case errors.Is(err, errAdoptedExit):
		return schemas.ExitUnknown
	case !errors.As(err, &ee):
		return schemas.ExitCrash
	}
	switch code := ee.ExitCode(); code {
	case -1:
		return schemas.ExitKilled
	case 0:
		return schemas.ExitClean
	case ExitCodeCannotStart:
		return schemas.ExitCannotStart
	}
	return schemas.ExitCrash
}

// supervision is what the hive shares with all its worker supervisors.
type supervision struct {
	skipOnce  sync.Once
	skip      chan struct{} // closed by SkipGrace
	mu        sync.Mutex
	graceful  int                // workers a shutdown stopped within their grace
	forced    int                // workers a shutdown killed
	workersKV jetstream.KeyValue // the workers bucket, once found
}

func (s *supervision) skipCh() chan struct{} {
	s.skipOnce.Do(func() { s.skip = make(chan struct{}) })
	return s.skip
}

// SkipGrace makes the hive's stop kill every worker at once instead of
// waiting out the grace period: a second Ctrl-C.
func (h *Hive) SkipGrace() {
	ch := h.sup.skipCh()
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// newWorker makes the supervisor of worker id, replica of model m.
func (h *Hive) newWorker(id string, m ModelSpec) *worker {
	stops := h.metrics.stopsFor(m.Name)
	stops.tally = &h.sup
	return &worker{
		spec: workerSpec{
			ID: id, Model: m.Name, Exe: h.cfg.Executable,
			Args: workerArgs(h.cfg, m, id), Env: h.env,
		},
		starter:   h.starter,
		policy:    h.cfg.Restart,
		grace:     h.cfg.StopGrace,
		log:       h.log.With("worker_id", id, "model", m.Name),
		restarts:  h.metrics.restarts.WithLabelValues(m.Name),
		running:   h.metrics.running.WithLabelValues(m.Name),
		audit:     h.audit,
		stops:     stops,
		forget:    h.forgetWorker,
		hung:      &kvHungWatcher{h: h},
		skipGrace: h.sup.skipCh(),
		admit:     func() error { return h.admitRestart(id, m) },
		status:    WorkerStatus{ID: id, Model: m.Name, State: StatePending},
	}
}

// newExecStarter makes the hive's starter; Run gives it the data directory.
func newExecStarter() *execStarter { return &execStarter{} }

// shutdownBegan logs and audits the start of the hive's shutdown.
func (h *Hive) shutdownBegan(cause error) time.Time {
	h.log.Info("hive stopping", "cause", cause, "grace", h.cfg.StopGrace)
	h.audit(schemas.AuditEvent{Type: schemas.AuditHiveStopping, Reason: fmt.Sprint(cause)})
	return time.Now()
}

// shutdownDone logs, audits and measures the end of the hive's shutdown,
// once every worker is gone.
func (h *Hive) shutdownDone(began time.Time) {
	took := time.Since(began)
	h.metrics.shutdown.Observe(took.Seconds())
	h.sup.mu.Lock()
	graceful, forced := h.sup.graceful, h.sup.forced
	h.sup.mu.Unlock()
	h.log.Info("hive stopped", "took", took.Round(time.Millisecond), "graceful", graceful, "force_killed", forced)
	h.audit(schemas.AuditEvent{Type: schemas.AuditHiveStopped,
		Reason: fmt.Sprintf("%d workers exited gracefully, %d force-killed, in %v", graceful, forced, took.Round(time.Millisecond))})
}

// failedWorkers lists the workers the hive gave up on, for its heartbeat.
func (h *Hive) failedWorkers() []schemas.FailedWorker {
	var out []schemas.FailedWorker
	for _, st := range h.Workers() {
		if st.State == StateFailed {
			out = append(out, schemas.FailedWorker{WorkerID: st.ID, Model: st.Model, Reason: st.Reason, Since: st.FailedAt})
		}
	}
	return out
}
