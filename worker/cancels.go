package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// cancelWatch knows which jobs are cancelled without a round trip per job:
// one subscription to every put in the cancels bucket, for the worker's
// life, and a read of the bucket's keys when it starts and again after
// every reconnect, for the cancels it cannot have seen. Until that read
// succeeds it is not sure, and a job starting then reads its own key.
type cancelWatch struct {
	nc      *nats.Conn
	prefix  string // the subject of a key, less the key
	log     *slog.Logger
	kv      func(context.Context) (jetstream.KeyValue, error)
	running map[string]map[*int]func() // jobs in hand by ID: what stops each

	mu     sync.Mutex
	seen   map[string]time.Time // cancelled job IDs, with when they were seen
	synced bool                 // seen holds every key the bucket holds
	ttl    time.Duration        // how long the bucket keeps a key
}

// cancelMemory is how long a cancel is remembered when the bucket keeps
// its keys for ever.
const cancelMemory = 24 * time.Hour

func newCancelWatch(nc *nats.Conn, keyPrefix string, kv func(context.Context) (jetstream.KeyValue, error), log *slog.Logger) *cancelWatch {
	return &cancelWatch{nc: nc, prefix: keyPrefix, kv: kv, log: log, seen: map[string]time.Time{},
		running: map[string]map[*int]func(){}, ttl: cancelMemory}
}

// run subscribes to the bucket's puts and keeps the view whole until ctx
// ends: it reads the keys at once, again after each reconnect, and forgets
// what the bucket has forgotten.
func (c *cancelWatch) run(ctx context.Context) {
	statuses := c.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED)
	defer c.nc.RemoveStatusListener(statuses)
	sub, err := c.nc.Subscribe(c.prefix+">", func(m *nats.Msg) {
		if op := m.Header.Get("KV-Operation"); op == "" {
			c.cancel(strings.TrimPrefix(m.Subject, c.prefix))
		}
	})
	if err != nil {
		c.log.Warn("watch the cancels bucket; every job reads its own key", "err", err)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	// The server has the subscription before it answers the read below,
	// so no put falls between the two.
	resync := time.NewTimer(0)
	defer resync.Stop()
	forget := time.NewTicker(time.Minute)
	defer forget.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-statuses:
			if s == nats.CONNECTED {
				resync.Reset(0)
				continue
			}
			c.mu.Lock()
			c.synced = false
			c.mu.Unlock()
		case <-resync.C:
			if err := c.sync(ctx); err != nil {
				failures++
				c.log.Warn("read the cancels bucket; jobs read their own key until it is read", "err", err)
				resync.Reset(min(pullRetryMin<<min(failures, 10), 10*time.Second))
				continue
			}
			failures = 0
		case <-forget.C:
			c.forget(time.Now())
		}
	}
}

// sync adds every key the bucket holds.
func (c *cancelWatch) sync(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	kv, err := c.kv(ctx)
	if err != nil {
		return err
	}
	status, err := kv.Status(ctx)
	if err != nil {
		return err
	}
	// A watch of every key, ended by the nil that follows the last one:
	// unlike ListKeys, running out of time is then an error.
	watcher, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes(), jetstream.MetaOnly())
	if err != nil {
		return err
	}
	defer func() { _ = watcher.Stop() }()
read:
	for {
		select {
		case e := <-watcher.Updates():
			if e == nil {
				break read
			}
			c.cancel(e.Key())
		case <-ctx.Done():
			return fmt.Errorf("list the cancelled jobs: %w", ctx.Err())
		}
	}
	c.mu.Lock()
	c.synced = true
	if status.TTL() > 0 {
		c.ttl = status.TTL()
	}
	c.mu.Unlock()
	return nil
}

// forget drops the cancels older than the bucket keeps them: a job that
// old has expired anyway.
func (c *cancelWatch) forget(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, at := range c.seen {
		if now.Sub(at) > c.ttl {
			delete(c.seen, id)
		}
	}
}

// cancel records that jobID is cancelled and stops it where it runs here.
func (c *cancelWatch) cancel(jobID string) {
	c.mu.Lock()
	c.seen[jobID] = time.Now()
	var stops []func()
	for _, stop := range c.running[jobID] {
		stops = append(stops, stop)
	}
	c.mu.Unlock()
	for _, stop := range stops {
		stop()
	}
}

// begin watches jobID, which stop stops when it is cancelled from now on,
// and reports whether it was cancelled already; end stops watching. When
// the view is not whole, the job's key is read.
func (c *cancelWatch) begin(ctx context.Context, log *slog.Logger, jobID string, stop func()) (cancelled bool, end func()) {
	token := new(int)
	c.mu.Lock()
	if c.running[jobID] == nil {
		c.running[jobID] = map[*int]func(){}
	}
	c.running[jobID][token] = stop
	_, cancelled = c.seen[jobID]
	synced := c.synced
	c.mu.Unlock()
	end = func() {
		c.mu.Lock()
		delete(c.running[jobID], token)
		if len(c.running[jobID]) == 0 {
			delete(c.running, jobID)
		}
		c.mu.Unlock()
	}
	if cancelled || synced {
		return cancelled, end
	}
	return c.read(ctx, log, jobID), end
}

// read reports whether the job's key is in the bucket.
func (c *cancelWatch) read(ctx context.Context, log *slog.Logger, jobID string) bool {
	ctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	kv, err := c.kv(ctx)
	if err == nil {
		_, err = kv.Get(ctx, jobID)
	}
	switch {
	case err == nil:
		return true
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false
	default:
		log.Warn("read the cancels bucket; running the job", "err", err)
		return false
	}
}
