package queen

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// keepInterval is how often the keeper checks what the bus holds.
const keepInterval = 2 * time.Second

// keeper owns the bus resources rbee needs: it provisions them from the
// queen's configuration when Run starts, then checks every keepInterval,
// and whenever a request found something missing, and makes again what
// the bus lost (a stream deleted by mistake, a memory bucket gone with a
// server restart). Until then the queen is not ready, and requests that
// need the missing pieces fail at once with bus_unavailable instead of
// waiting on them.
type keeper struct {
	q    *Queen
	kick chan struct{}
	// checked: a check has found everything once, so what is missing
	// later was lost. Only run's goroutine uses it.
	checked bool

	mu      sync.Mutex
	missing error // why the bus is not as provisioned; nil when it is (or before the first check)
}

func newKeeper(q *Queen) *keeper { return &keeper{q: q, kick: make(chan struct{}, 1)} }

// problem is why the bus is not ready, or nil.
func (k *keeper) problem() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.missing
}

func (k *keeper) set(err error) {
	k.mu.Lock()
	k.missing = err
	k.mu.Unlock()
}

// recheck asks for a check now.
func (k *keeper) recheck() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// run provisions, then keeps checking until ctx is done.
func (k *keeper) run(ctx context.Context) {
	t := time.NewTicker(keepInterval)
	defer t.Stop()
	for {
		k.keep(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-k.kick:
		}
	}
}

// keep checks once and provisions what is missing.
func (k *keeper) keep(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	js, subj := k.q.js, k.q.cfg.Subjects
	err := bus.Check(ctx, js, subj)
	if errors.Is(err, bus.ErrNotProvisioned) {
		k.set(err)
		if k.checked {
			k.q.log.Warn("the bus lost rbee's streams or buckets; provisioning them again", "err", err)
		} else {
			k.q.log.Info("provisioning rbee's streams and buckets", "missing", err)
		}
		if err = bus.Provision(ctx, js, subj, k.q.live().Provisioning); err == nil {
			k.q.log.Info("streams and buckets provisioned")
		}
	}
	if err != nil {
		k.set(err)
		k.q.log.Warn("check streams and buckets", "err", err)
		return
	}
	k.checked = true
	k.set(nil)
}

// ready fails with bus_unavailable while the keeper knows something is
// missing.
func (k *keeper) ready() error {
	if err := k.problem(); err != nil {
		return schemas.Errorf(schemas.CodeBusUnavailable, "the bus is not ready: %v", err)
	}
	return nil
}
