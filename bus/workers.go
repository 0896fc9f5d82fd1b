package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// LiveWorkers reads every heartbeat in the workers bucket kv. The bucket's
// TTL removes the keys of dead workers, so what is there is alive. Entries
// that do not decode or validate are skipped and logged at debug level.
func LiveWorkers(ctx context.Context, kv jetstream.KeyValue, logger *slog.Logger) ([]schemas.WorkerHeartbeat, error) {
	return live[schemas.WorkerHeartbeat](ctx, kv, logger)
}

// LiveHives reads every heartbeat in the hives bucket kv, as LiveWorkers
// does the workers'.
func LiveHives(ctx context.Context, kv jetstream.KeyValue, logger *slog.Logger) ([]schemas.HiveHeartbeat, error) {
	return live[schemas.HiveHeartbeat](ctx, kv, logger)
}

// live reads and validates every value of a heartbeats bucket.
func live[T any, PT interface {
	*T
	Validate() error
}](ctx context.Context, kv jetstream.KeyValue, logger *slog.Logger) ([]T, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	bucket := kv.Bucket()
	// One watch delivers every current value and then a nil marker: a
	// single round trip, where listing keys and reading each is one per key.
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch bucket %s: %w", bucket, err)
	}
	defer func() {
		if err := w.Stop(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			logger.Debug("stop watch", "bucket", bucket, "err", err)
		}
		// The watcher's delivery goroutine blocks while its channel is
		// full; draining lets it see the stop and exit (it closes the
		// channel on its way out).
		for range w.Updates() {
		}
	}()
	var out []T
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("bucket %s: watch closed", bucket)
			}
			if e == nil { // every current value delivered
				return out, nil
			}
			var hb T
			if err := json.Unmarshal(e.Value(), &hb); err != nil {
				logger.Debug("skip undecodable heartbeat", "bucket", bucket, "key", e.Key(), "err", err)
				continue
			}
			if err := PT(&hb).Validate(); err != nil {
				logger.Debug("skip invalid heartbeat", "bucket", bucket, "key", e.Key(), "err", err)
				continue
			}
			out = append(out, hb)
		case <-ctx.Done():
			return nil, fmt.Errorf("read bucket %s: %w", bucket, ctx.Err())
		}
	}
}
