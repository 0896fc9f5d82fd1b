package hive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// workersBucket is the workers bucket, looked up once it exists.
func (h *Hive) workersBucket(ctx context.Context) (jetstream.KeyValue, error) {
	h.sup.mu.Lock()
	kv := h.sup.workersKV
	h.sup.mu.Unlock()
	if kv != nil {
		return kv, nil
	}
	kv, err := h.js.KeyValue(ctx, h.cfg.Subjects.WorkersBucket())
	if err != nil {
		return nil, fmt.Errorf("workers bucket %s: %w", h.cfg.Subjects.WorkersBucket(), err)
	}
	h.sup.mu.Lock()
	h.sup.workersKV = kv
	h.sup.mu.Unlock()
	return kv, nil
}

// forgetWorker deletes the registry key of a worker the hive killed: the
// worker could not, and the queen would send it jobs until the key's TTL.
func (h *Hive) forgetWorker(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	kv, err := h.workersBucket(ctx)
	if err == nil {
		err = kv.Delete(ctx, id)
	}
	if err != nil {
		h.log.Warn("delete a killed worker's registry key; it expires with the bucket's TTL", "worker_id", id, "err", err)
		return
	}
	h.log.Info("deleted a killed worker's registry key", "worker_id", id)
}

// kvHungWatcher reads a worker's key in the workers bucket. The worker is
// hung when the key stops changing (the worker's heartbeat, every 2 s, has
// stopped: SIGSTOP, a deadlock) for longer than Config.HungTimeout, or when
// it is busy and its progress counter stands still for longer than
// Config.ProgressTimeout, or when it has not said it is ready within
// Config.LoadTimeout of its start (stuck loading its model). Times are the
// hive's own, taken when it sees a change: the server's clock may differ.
type kvHungWatcher struct{ h *Hive }

func (k *kvHungWatcher) watch(ctx context.Context, id string, pid int, hung chan<- hang) {
	cfg := k.h.cfg
	every, on := time.Second, false
	for _, d := range []time.Duration{cfg.HungTimeout, cfg.ProgressTimeout, cfg.LoadTimeout} {
		if d > 0 {
			every, on = min(every, d/4), true
		}
	}
	if !on {
		return
	}
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	var (
		seen       bool // a heartbeat of this process was read
		ready      bool // one said it had loaded its model
		rev        uint64
		beatAt     time.Time
		progress   uint64
		progressAt time.Time
		loadFrom   = time.Now()
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		hb, r, err := k.read(ctx, id)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		case err != nil:
			// The bus is in trouble, not necessarily the worker, whose
			// heartbeats cannot get through either (nor can it get ready
			// without the bus): judge nothing until the key can be read
			// again.
			beatAt, progressAt = now, now
			if !ready {
				loadFrom = now
			}
			continue
		case hb.PID != pid:
			// The key of an earlier process of this worker, not yet gone.
		default:
			if !seen || r != rev {
				seen, rev, beatAt = true, r, now
			}
			if hb.State == schemas.WorkerReady || hb.State == schemas.WorkerDraining {
				ready = true
			}
			if hb.Busy == 0 || hb.Progress != progress || progressAt.IsZero() {
				progress, progressAt = hb.Progress, now
			}
			if cfg.ProgressTimeout > 0 && hb.Busy > 0 && now.Sub(progressAt) > cfg.ProgressTimeout {
				hung <- hang{reason: fmt.Sprintf("busy with %d jobs and no token produced for %v", hb.Busy, now.Sub(progressAt).Round(time.Millisecond))}
				return
			}
		}
		if !ready && cfg.LoadTimeout > 0 && now.Sub(loadFrom) > cfg.LoadTimeout {
			hung <- hang{reason: fmt.Sprintf("not ready %v after its start: stuck loading", now.Sub(loadFrom).Round(time.Millisecond)), loading: true}
			return
		}
		// A worker that never beat is still loading its model (the load
		// timeout's business): only one that beat and stopped is hung.
		if cfg.HungTimeout > 0 && seen && now.Sub(beatAt) > cfg.HungTimeout {
			hung <- hang{reason: fmt.Sprintf("no heartbeat for %v", now.Sub(beatAt).Round(time.Millisecond))}
			return
		}
	}
}

func (k *kvHungWatcher) read(ctx context.Context, id string) (schemas.WorkerHeartbeat, uint64, error) {
	var hb schemas.WorkerHeartbeat
	rctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	kv, err := k.h.workersBucket(rctx)
	if err != nil {
		return hb, 0, err
	}
	e, err := kv.Get(rctx, id)
	if err != nil {
		return hb, 0, err
	}
	if err := json.Unmarshal(e.Value(), &hb); err != nil {
		return hb, 0, fmt.Errorf("decode heartbeat of %s: %w", id, err)
	}
	return hb, e.Revision(), nil
}
