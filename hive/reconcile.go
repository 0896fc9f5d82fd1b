package hive

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rbee-dev/rbee/schemas"
)

// DefaultReconcileInterval is how often the hive converges its workers to
// the wanted set without being asked, retrying starts the preflight refused
// and unloading idle workers.
const DefaultReconcileInterval = time.Second

// proc is one supervised worker: the model it runs, its supervisor, and how
// to stop it.
type proc struct {
	spec   ModelSpec
	w      *worker
	cancel context.CancelFunc // nil until started
	done   chan struct{}      // closed once its supervisor returned
	// removing: no longer wanted; it leaves procs once its process is gone.
	removing bool
	exited   bool // its supervisor returned (stopped, or failed for good)

	// From the worker's heartbeats: when it last had a job, for the idle
	// timeout and the least recently used eviction.
	lastActive time.Time
	busy       int
	progress   uint64
	// Where the process metricsPID serves its metrics: a loopback URL that
	// heartbeat told, of this worker's current process only.
	metricsURL string
	metricsPID int
}

// running reports whether p holds, or may soon hold, a live process.
func (p *proc) running() bool { return p.cancel != nil && !p.removing && !p.exited }

// rejection is a model's last refusal by the preflight.
type rejection struct {
	code schemas.Code
	at   time.Time
}

// wantedSet names the workers models ask for: replicas 0 to n-1 of each.
func (h *Hive) wantedSet(models []ModelSpec) (map[string]ModelSpec, error) {
	wanted := map[string]ModelSpec{}
	for _, m := range models {
		for r := range m.Replicas {
			id := workerID(h.cfg.ID, m.Name, r)
			if _, taken := wanted[id]; taken {
				return nil, fmt.Errorf("model %s replica %d: worker ID %s is already taken", m.Name, r, id)
			}
			wanted[id] = m
		}
	}
	return wanted, nil
}

// SetWanted replaces the wanted set: models with their replicas, which join
// the catalog. The loop then stops the workers no longer wanted (or wanted
// with another spec) and starts the new ones; the others carry on untouched.
func (h *Hive) SetWanted(models []ModelSpec) error {
	specs := make([]ModelSpec, len(models))
	for i, m := range models {
		var err error
		if specs[i], err = m.withDefaults(); err != nil {
			return fmt.Errorf("models[%d]: %w", i, err)
		}
	}
	wanted, err := h.wantedSet(specs)
	if err != nil {
		return err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range specs {
		if _, ok := h.catalog[m.Name]; !ok {
			h.models = append(h.models, m.Name)
		}
		h.catalog[m.Name] = m
	}
	h.wanted = wanted
	h.log.Info("wanted set changed", "workers", len(wanted))
	h.converge()
	return nil
}

// converge moves the supervised workers towards the wanted set: it stops
// those not wanted, makes the missing ones and, while Run runs, starts each
// that the preflight lets through. It never touches a worker that is
// wanted as it is. h.mu is held.
func (h *Hive) converge() {
	for id, p := range h.procs {
		if spec, ok := h.wanted[id]; (!ok || !sameWorker(spec, p.spec)) && !p.removing {
			h.remove(p)
		}
	}
	for _, id := range h.wantedIDs() {
		if _, ok := h.procs[id]; !ok {
			p := h.newProc(id, h.wanted[id])
			h.procs[id] = p
			h.order = append(h.order, p)
		}
	}
	if h.runCtx == nil || h.stopping {
		return
	}
	for _, p := range h.order {
		if p.cancel != nil || p.removing {
			continue
		}
		if err := h.admit(p.w.spec.ID, p.spec); err != nil {
			p.w.update(func(st *WorkerStatus) { st.LastExit = err.Error() })
			continue
		}
		h.start(p)
	}
}

// admit runs the preflight for a start of worker id of m by the loop or
// by its supervisor: a refusal is recorded (once per model and code) and,
// when memory is short, an idle worker of another model is stopped to make
// room. h.mu is held.
func (h *Hive) admit(id string, m ModelSpec) error {
	if err := h.preflight(m, id); err != nil {
		h.refused(m.Name, id, err, false)
		if schemas.CodeOf(err) == schemas.CodeInsufficientRAM {
			h.evictIdle(m.Name)
		}
		return err
	}
	delete(h.rejected, m.Name)
	return nil
}

// admitRestart is admit for the supervisor of worker id, about to restart
// it.
func (h *Hive) admitRestart(id string, m ModelSpec) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.admit(id, m)
}

// sameWorker reports whether a worker of a runs as one of b would: the
// model's replica count is not the worker's business.
func sameWorker(a, b ModelSpec) bool {
	a.Replicas, b.Replicas = 0, 0
	return a == b
}

// wantedIDs lists the wanted workers in catalog order, then by ID.
func (h *Hive) wantedIDs() []string {
	rank := map[string]int{}
	for i, m := range h.models {
		rank[m] = i
	}
	ids := make([]string, 0, len(h.wanted))
	for id := range h.wanted {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b string) int {
		if d := rank[h.wanted[a].Name] - rank[h.wanted[b].Name]; d != 0 {
			return d
		}
		return compareIDs(a, b)
	})
	return ids
}

// compareIDs orders worker IDs of one model by replica: "m-2" before "m-10".
func compareIDs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// newProc makes the supervisor of a worker, not started.
func (h *Hive) newProc(id string, m ModelSpec) *proc {
	return &proc{spec: m, done: make(chan struct{}), w: h.newWorker(id, m)}
}

// start runs p's supervisor under Run's context. h.mu is held.
func (h *Hive) start(p *proc) {
	ctx, cancel := context.WithCancel(h.runCtx)
	p.cancel, p.lastActive = cancel, time.Now()
	h.runWG.Go(func() {
		p.w.run(ctx)
		h.exited(p)
	})
}

// exited records that p's supervisor returned, and lets the loop start
// what waited for it (the same worker with a new spec, or a model waiting
// for the memory p held).
func (h *Hive) exited(p *proc) {
	h.mu.Lock()
	p.exited = true
	if p.removing {
		h.forget(p)
	}
	close(p.done)
	h.mu.Unlock()
	h.poke()
}

// remove stops p, which is no longer wanted. h.mu is held.
func (h *Hive) remove(p *proc) {
	p.removing = true
	switch {
	case p.cancel == nil:
		h.forget(p)
		close(p.done)
	case p.exited:
		h.forget(p)
	default:
		p.cancel()
	}
}

// forget drops p from the supervised workers. h.mu is held.
func (h *Hive) forget(p *proc) {
	if h.procs[p.w.spec.ID] == p {
		delete(h.procs, p.w.spec.ID)
	}
	h.order = slices.DeleteFunc(h.order, func(q *proc) bool { return q == p })
}

// poke asks the loop to converge now.
func (h *Hive) poke() {
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// reconcileLoop converges when asked and every ReconcileInterval, and
// unloads workers idle longer than IdleTimeout, until ctx ends.
func (h *Hive) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(h.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.kick:
		}
		h.mu.Lock()
		h.unloadIdle(time.Now())
		h.converge()
		h.mu.Unlock()
	}
}

// unloadIdle drops from the wanted set every worker that has had no job for
// IdleTimeout. h.mu is held.
func (h *Hive) unloadIdle(now time.Time) {
	if h.cfg.IdleTimeout <= 0 {
		return
	}
	for _, p := range h.order {
		if p.running() && p.busy == 0 && now.Sub(p.lastActive) > h.cfg.IdleTimeout {
			h.log.Info("unloading idle worker", "worker_id", p.w.spec.ID, "model", p.spec.Name,
				"idle", now.Sub(p.lastActive).Round(time.Millisecond))
			h.pm.unloads.Inc()
			delete(h.wanted, p.w.spec.ID)
			h.remove(p)
		}
	}
}

// evictIdle stops the least recently used idle worker of another model, so
// that model's worker can start once the memory is free. Only one eviction
// is in flight at a time: the next waits to see what the first freed.
// h.mu is held.
func (h *Hive) evictIdle(forModel string) bool {
	var lru *proc
	for _, p := range h.order {
		if p.removing && !p.exited && p.cancel != nil {
			return true // an eviction (or a stop) is freeing memory already
		}
		if p.running() && p.busy == 0 && p.spec.Name != forModel && (lru == nil || p.lastActive.Before(lru.lastActive)) {
			lru = p
		}
	}
	if lru == nil {
		return false
	}
	h.log.Info("stopping the least recently used idle worker to make room", "worker_id", lru.w.spec.ID,
		"model", lru.spec.Name, "for_model", forModel, "idle_since", lru.lastActive)
	h.pm.evictions.Inc()
	delete(h.wanted, lru.w.spec.ID)
	h.remove(lru)
	return true
}

// spawn adds a worker of a catalog model to the wanted set, once the
// preflight lets it through (or an idle worker is being stopped to make
// room for it).
func (h *Hive) spawn(req schemas.SpawnRequest) (schemas.SpawnReply, error) {
	reply := schemas.SpawnReply{HiveID: h.cfg.ID}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.stopping:
		return reply, schemas.Errorf(schemas.CodeShuttingDown, "hive %s is shutting down", h.cfg.ID)
	case h.draining:
		return reply, schemas.Errorf(schemas.CodeShuttingDown, "hive %s is draining: it takes no spawns", h.cfg.ID)
	}
	spec, ok := h.catalog[req.Model]
	if !ok {
		return reply, schemas.Errorf(schemas.CodeModelNotFound, "hive %s has no model %q", h.cfg.ID, req.Model)
	}
	if req.OnDemand {
		var failed []string
		for _, id := range h.wantedIDs() {
			if h.wanted[id].Name != req.Model {
				continue
			}
			if p := h.procs[id]; p != nil && p.exited && !p.removing {
				failed = append(failed, id)
				continue
			}
			reply.WorkerID = id
			return reply, nil
		}
		if len(failed) > 0 {
			// Loading it again would fail again: its worker gave up for
			// good, until an operator stops and spawns it.
			return reply, schemas.Errorf(schemas.CodeNoCapacity, "hive %s: worker %s of %q failed", h.cfg.ID, failed[0], req.Model)
		}
	}
	var id string
	for r := 0; ; r++ {
		id = workerID(h.cfg.ID, spec.Name, r)
		if _, taken := h.wanted[id]; !taken && h.procs[id] == nil {
			break
		}
	}
	if err := h.preflight(spec, id); err != nil {
		if schemas.CodeOf(err) != schemas.CodeInsufficientRAM || !h.evictIdle(spec.Name) {
			h.refused(spec.Name, id, err, true)
			return reply, err
		}
		h.log.Info("spawn waits for an evicted worker's memory", "worker_id", id, "model", spec.Name)
		// Not a refusal: the loop starts it once the memory is free.
		h.rejected[spec.Name] = rejection{code: schemas.CodeInsufficientRAM, at: time.Now()}
	}
	h.wanted[id] = spec
	h.converge()
	reply.WorkerID, reply.Started = id, true
	h.log.Info("worker spawned", "worker_id", id, "model", spec.Name, "on_demand", req.OnDemand)
	return reply, nil
}

// stopWorker drops a worker from the wanted set and waits until its
// process is gone.
func (h *Hive) stopWorker(ctx context.Context, req schemas.StopRequest) (schemas.StopReply, error) {
	reply := schemas.StopReply{HiveID: h.cfg.ID, WorkerID: req.WorkerID}
	h.mu.Lock()
	p := h.procs[req.WorkerID]
	_, wanted := h.wanted[req.WorkerID]
	if p == nil && !wanted {
		h.mu.Unlock()
		return reply, schemas.Errorf(schemas.CodeNotFound, "hive %s has no worker %s", h.cfg.ID, req.WorkerID)
	}
	h.log.Info("stopping worker on request", "worker_id", req.WorkerID, "reason", req.Reason)
	delete(h.wanted, req.WorkerID)
	if p != nil {
		h.remove(p)
	}
	h.mu.Unlock()
	if p == nil {
		return reply, nil
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return reply, schemas.Wrap(schemas.CodeTimeout, fmt.Errorf("worker %s still stopping: %w", req.WorkerID, ctx.Err()))
	}
	reply.Exit = p.w.snapshot().LastExit
	return reply, nil
}

// refused records a preflight refusal: counted, audited and logged. A
// retry by the loop of a refusal already recorded for the model is not
// recorded again, so a machine short of memory does not flood the audit
// stream; the requester of a spawn always hears of it. h.mu is held.
func (h *Hive) refused(model, id string, err error, requested bool) {
	code := schemas.CodeOf(err)
	if prev, ok := h.rejected[model]; ok && prev.code == code && !requested {
		return
	}
	h.rejected[model] = rejection{code: code, at: time.Now()}
	h.pm.rejected.WithLabelValues(string(code)).Inc()
	h.log.Warn("preflight refused a worker", "worker_id", id, "model", model, "code", code, "err", err)
	var se *schemas.Error
	reason := err.Error()
	if errors.As(err, &se) {
		reason = se.Message
	}
	h.audit(schemas.AuditEvent{Type: schemas.AuditSpawnRejected, WorkerID: id, Model: model, Code: code, Reason: reason})
}
