package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// errOrphaned ends a worker's serving when its hive is gone for good.
var errOrphaned = errors.New("the worker's hive has been gone longer than the orphan grace")

// maxOrphanCheck bounds the time between two looks at the hive's key.
const maxOrphanCheck = 5 * time.Second

// watchHive returns a context that ends, like a stop signal, once the
// worker's hive has been missing from the hives bucket for longer than
// OrphanGrace; stop ends the watch. A worker run by hand, or with no grace,
// watches nothing. Workers outlive a hive that crashed so that a restarted
// hive can adopt them; this is what keeps them from outliving one that
// never comes back.
func (w *Worker) watchHive(ctx context.Context) (context.Context, func()) {
	if w.cfg.HiveID == "" || w.cfg.OrphanGrace <= 0 {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if w.orphaned(ctx) {
			w.log.Warn("hive gone longer than the orphan grace; draining", "hive_id", w.cfg.HiveID, "grace", w.cfg.OrphanGrace)
			cancel(errOrphaned)
		}
	})
	return ctx, func() {
		cancel(nil)
		wg.Wait()
	}
}

// orphaned reads the hive's key until it has been missing for longer than
// the grace (true) or ctx ends (false). Only a key known to be missing
// counts: a bus that cannot answer says nothing about the hive.
func (w *Worker) orphaned(ctx context.Context) bool {
	t := time.NewTicker(max(min(w.cfg.OrphanGrace/4, maxOrphanCheck), 10*time.Millisecond))
	defer t.Stop()
	var missingSince time.Time
	for {
		present, known := w.hivePresent(ctx)
		switch {
		case !known || present:
			missingSince = time.Time{}
		case missingSince.IsZero():
			missingSince = time.Now()
			w.log.Info("hive's key is missing; waiting for it to come back", "hive_id", w.cfg.HiveID, "grace", w.cfg.OrphanGrace)
		case time.Since(missingSince) > w.cfg.OrphanGrace:
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
	}
}

func (w *Worker) hivePresent(ctx context.Context) (present, known bool) {
	ctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	kv, err := w.js.KeyValue(ctx, w.cfg.Subjects.HivesBucket())
	if err != nil {
		return false, false
	}
	_, err = kv.Get(ctx, w.cfg.HiveID)
	switch {
	case err == nil:
		return true, true
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		return false, true
	}
	return false, false
}
