package queen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// HeaderIdempotencyKey names the HTTP header with a client's idempotency key.
const HeaderIdempotencyKey = "Idempotency-Key"

// idempotencyKey is a client's key as a bucket key: any string a client
// sends becomes a valid one, of one length.
func idempotencyKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// claim records that key starts job. When the key was used before, it
// returns the job that use started instead, and false.
func (q *Queen) claim(ctx context.Context, key string, job schemas.Job) (schemas.Job, bool, error) {
	kv, err := q.js.KeyValue(ctx, q.cfg.Subjects.IdempotencyBucket())
	if err != nil {
		return job, false, busError(ctx, fmt.Errorf("idempotency bucket: %w", err))
	}
	data, err := json.Marshal(job)
	if err != nil {
		return job, false, fmt.Errorf("encode %s: %w", &job, err)
	}
	k := idempotencyKey(key)
	_, err = kv.Create(ctx, k, data)
	if err == nil {
		return job, true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return job, false, busError(ctx, fmt.Errorf("claim idempotency key: %w", err))
	}
	e, err := kv.Get(ctx, k)
	if err != nil {
		return job, false, busError(ctx, fmt.Errorf("read idempotency key: %w", err))
	}
	var original schemas.Job
	if err := json.Unmarshal(e.Value(), &original); err != nil || original.Validate() != nil {
		return job, false, schemas.Errorf(schemas.CodeInternal, "the job recorded for this idempotency key is unreadable")
	}
	return original, false, nil
}

// release forgets key, when the job it was to start never got queued.
func (q *Queen) release(ctx context.Context, key string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	kv, err := q.js.KeyValue(ctx, q.cfg.Subjects.IdempotencyBucket())
	if err == nil {
		err = kv.Delete(ctx, idempotencyKey(key))
	}
	if err != nil {
		q.log.Warn("forget an idempotency key", "err", err)
	}
}

// replay follows a job another request started: its events from the first,
// as the stream keeps them, then live until it ends. Following it does not
// own it: going away does not cancel it.
func (q *Queen) replay(ctx context.Context, job schemas.Job) (*relay, error) {
	rl := newRelay(q, job)
	rl.follower = true
	cons, err := q.js.OrderedConsumer(ctx, q.cfg.Subjects.StreamsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{job.Stream},
	})
	if err == nil {
		rl.follow, err = cons.Consume(func(msg jetstream.Msg) {
			if !rl.signed(msg) {
				rl.forged(0)
				return
			}
			events, err := schemas.DecodeEvents(nil, msg.Data())
			if err != nil {
				rl.push(nil, 0, schemas.Errorf(schemas.CodeInternal, "unreadable job event: %v", err))
				return
			}
			rl.push(events, 0, nil)
		}, jetstream.PullHeartbeat(consumeHeartbeat))
	}
	if err != nil {
		return nil, busError(ctx, fmt.Errorf("follow job %s: %w", job.ID, err))
	}
	q.metrics.jobsInFlight.Inc()
	q.log.Info("request repeats an idempotency key: following its job", "job_id", job.ID, "model", job.Model)
	return rl, nil
}
