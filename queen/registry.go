package queen

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// registry mirrors the workers bucket through one watch for the whole
// queen, so admitting a request reads memory, not the bus: a burst of
// thousands of requests costs the server nothing more. A worker leaves the
// mirror when its key is deleted or expires (the bucket leaves a marker),
// and a heartbeat older than staleAfter is not trusted even without one.
type registry struct {
	q          *Queen
	staleAfter time.Duration

	mu      sync.Mutex
	workers map[string]schemas.WorkerHeartbeat // by key
	synced  chan struct{}                      // closed once the watch delivered the bucket's values
	running bool
	started time.Time
	stop    context.CancelFunc
	done    chan struct{}
}

// rewatchAfter is how old a watch must be before a request for a model it
// does not know starts a new one: a watch can go quiet for good when its
// bucket is deleted and made again, and a rebuilt one costs one round trip.
const rewatchAfter = time.Second

func newRegistry(q *Queen) *registry {
	return &registry{q: q, staleAfter: q.cfg.WorkerStaleAfter}
}

// ensure starts the watch unless it runs, and waits until the mirror holds
// the bucket's values.
func (r *registry) ensure(ctx context.Context) error {
	r.mu.Lock()
	if !r.running {
		kv, err := r.q.js.KeyValue(ctx, r.q.cfg.Subjects.WorkersBucket())
		if err != nil {
			r.mu.Unlock()
			return busError(ctx, fmt.Errorf("workers bucket %s: %w", r.q.cfg.Subjects.WorkersBucket(), err))
		}
		wctx, stop := context.WithCancel(context.Background())
		w, err := kv.WatchAll(wctx)
		if err != nil {
			stop()
			r.mu.Unlock()
			return busError(ctx, fmt.Errorf("watch workers bucket: %w", err))
		}
		r.workers, r.synced, r.running, r.started = map[string]schemas.WorkerHeartbeat{}, make(chan struct{}), true, time.Now()
		r.stop, r.done = stop, make(chan struct{})
		go r.follow(w, r.synced, r.done)
	}
	synced := r.synced
	r.mu.Unlock()
	select {
	case <-synced:
		return nil
	case <-ctx.Done():
		return busError(ctx, fmt.Errorf("read workers bucket: %w", ctx.Err()))
	}
}

// follow applies the watch's updates until it ends; the next ensure then
// starts a new one.
func (r *registry) follow(w jetstream.KeyWatcher, synced, done chan struct{}) {
	defer close(done)
	defer func() {
		if err := w.Stop(); err != nil {
			r.q.log.Debug("stop workers watch", "err", err)
		}
		r.mu.Lock()
		r.running = false
		r.mu.Unlock()
	}()
	for e := range w.Updates() {
		if e == nil {
			close(synced)
			continue
		}
		r.apply(e)
	}
	r.q.log.Warn("workers bucket watch ended; it starts again with the next request")
}

func (r *registry) apply(e jetstream.KeyValueEntry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(r.workers, e.Key())
		return
	}
	var hb schemas.WorkerHeartbeat
	if err := json.Unmarshal(e.Value(), &hb); err != nil || hb.Validate() != nil {
		r.q.log.Debug("skip an unreadable worker heartbeat", "key", e.Key())
		delete(r.workers, e.Key())
		return
	}
	r.workers[e.Key()] = hb
}

// live returns the workers whose heartbeat is current.
func (r *registry) live(ctx context.Context) ([]schemas.WorkerHeartbeat, error) {
	if err := r.ensure(ctx); err != nil {
		return nil, err
	}
	now := r.q.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]schemas.WorkerHeartbeat, 0, len(r.workers))
	for _, hb := range r.workers {
		if now.Sub(hb.Time) <= r.staleAfter {
			out = append(out, hb)
		}
	}
	return out, nil
}

// rewatch replaces a watch older than rewatchAfter.
func (r *registry) rewatch(ctx context.Context) error {
	r.mu.Lock()
	old := r.running && time.Since(r.started) > rewatchAfter
	r.mu.Unlock()
	if !old {
		return nil
	}
	r.close()
	return r.ensure(ctx)
}

func (r *registry) close() {
	r.mu.Lock()
	stop, done, running := r.stop, r.done, r.running
	r.mu.Unlock()
	if running {
		stop()
		<-done
	}
}

// checkModel fails with model_not_found when no live worker serves model
// and no live hive knows it, and with no_capacity when every worker of it
// is draining and no hive that knows it would start one. A hive that does
// (on-demand load, or its worker is starting already: a worker replaced
// on a reload drains before its successor's first heartbeat) lets the
// request through: the job waits on the work queue for the worker.
func (q *Queen) checkModel(ctx context.Context, model string) error {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	live, seen, err := q.lookup(ctx, model)
	if err == nil && !seen {
		// Unknown to this watch: make sure it is not a stale one.
		if err = q.registry.rewatch(ctx); err == nil {
			live, seen, err = q.lookup(ctx, model)
		}
	}
	switch {
	case err != nil:
		return err
	case live:
		return nil
	}
	hives := q.hivesServing(ctx, model)
	switch {
	case len(hives) > 0:
		return q.place(ctx, model, hives)
	case seen:
		return schemas.Errorf(schemas.CodeNoCapacity, "every worker of model %q is draining", model)
	}
	return schemas.Errorf(schemas.CodeModelNotFound, "no live worker serves model %q", model)
}

// hivesFresh is how long the queen trusts its read of the hives bucket:
// only requests for a model without a live worker read it, so a burst of
// them costs one read a second.
const hivesFresh = time.Second

// hiveModels is the queen's last read of which live hives serve which
// models.
type hiveModels struct {
	mu     sync.Mutex
	at     time.Time
	models map[string][]schemas.HiveHeartbeat // model: the hives that know it
}

// hivesServing returns the live hives that can serve model. A failed read
// counts as none: the request then gets model_not_found, as it would have.
func (q *Queen) hivesServing(ctx context.Context, model string) []schemas.HiveHeartbeat {
	h := &q.hiveModels
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.at) > hivesFresh {
		hives, err := q.liveHives(ctx)
		h.at = time.Now()
		if err != nil {
			// Kept for hivesFresh too: an unreachable bucket is not read
			// again by every request that comes meanwhile.
			q.log.Debug("read the hives bucket", "err", err)
			return h.models[model]
		}
		h.models = map[string][]schemas.HiveHeartbeat{}
		for _, hb := range hives {
			for _, m := range hb.Models {
				h.models[m] = append(h.models[m], hb)
			}
		}
	}
	return h.models[model]
}

// lookup reports whether a live worker serves model, and whether any does
// (draining included).
func (q *Queen) lookup(ctx context.Context, model string) (live, seen bool, err error) {
	workers, err := q.registry.live(ctx)
	if err != nil {
		return false, false, err
	}
	for _, w := range workers {
		if w.Model == model {
			seen = true
			live = live || w.State != schemas.WorkerDraining
		}
	}
	return live, seen, nil
}
