package queen

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// jobSchema is the Rbee-Schema header of a queued job.
const jobSchema = "job/" + schemas.Version

// admit fills in the default max_tokens, validates req, checks that a live
// worker serves its model and makes a job with a fresh ID, a seed (so that
// a worker taking the job over samples what the first would have), a
// deadline (the one given (zero: none given), else the request's timeout,
// else the default) and a fresh event key, which the job's events must be
// signed with. startRelay sets the stream and queues it.
func (q *Queen) admit(ctx context.Context, req *schemas.InferRequest, deadline time.Time) (schemas.Job, error) {
	if req.MaxTokens == 0 {
		req.MaxTokens = q.live().DefaultMaxTokens
	}
	if err := req.Validate(); err != nil {
		return schemas.Job{}, err
	}
	if check := q.cfg.CheckResponseFormat; check != nil && req.ResponseFormat != nil {
		if err := check(req.ResponseFormat); err != nil {
			return schemas.Job{}, err
		}
	}
	now := time.Now().UTC()
	switch {
	case !deadline.IsZero():
	case req.Timeout > 0:
		deadline = now.Add(time.Duration(req.Timeout * float64(time.Second)))
	default:
		deadline = now.Add(q.live().DefaultTimeout)
	}
	if !deadline.After(now) {
		return schemas.Job{}, schemas.Errorf(schemas.CodeDeadlineExceeded, "the deadline %s has passed", deadline.Format(time.RFC3339Nano))
	}
	if err := q.checkModel(ctx, req.Model); err != nil {
		return schemas.Job{}, err
	}
	id := req.ID
	if id == "" {
		id = newJobID()
	}
	job := req.Job(id, "")
	if job.Seed == nil {
		seed := int64(rand.Uint64() >> 1)
		job.Seed = &seed
	}
	job.CreatedAt, job.Deadline = now, deadline.UTC()
	job.EventKey = schemas.NewEventKey()
	return job, nil
}

// cancel records that jobID is cancelled: a worker running it stops within
// a token, and one that takes it from the queue later does not start it.
func (q *Queen) cancel(ctx context.Context, jobID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	kv, err := q.js.KeyValue(ctx, q.cfg.Subjects.CancelsBucket())
	if err == nil {
		_, err = kv.Put(ctx, jobID, []byte(q.cfg.ID))
	}
	if err != nil {
		q.log.Warn("cancel job", "job_id", jobID, "err", err)
	}
}

// newJobID returns 26 random base32 characters: URL-safe, one subject token
// and a valid schemas ID.
func newJobID() string { return strings.ToLower(crand.Text()) }

// lookupTimeout bounds reading the workers bucket, which takes
// milliseconds while JetStream is up.
const lookupTimeout = 5 * time.Second

// enqueue publishes job on its model's work queue. While JetStream does not
// answer (a leader election, a restart) it retries with backoff until ctx is
// done; the job ID in Nats-Msg-Id makes a retry after a lost ack harmless.
// A full queue is no_capacity.
func (q *Queen) enqueue(ctx context.Context, job *schemas.Job) error {
	if err := job.Validate(); err != nil {
		return err
	}
	if err := q.keeper.ready(); err != nil {
		return err
	}
	data, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("encode %s: %w", job, err)
	}
	msg := &nats.Msg{Subject: q.cfg.Subjects.Jobs(job.Model), Data: data, Header: nats.Header{}}
	msg.Header.Set(schemas.HeaderMsgID, job.ID)
	msg.Header.Set(schemas.HeaderSchema, jobSchema)

	err = q.publishJob(ctx, msg)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNoJobsStream):
		q.keeper.recheck()
		return schemas.Errorf(schemas.CodeBusUnavailable, "the jobs stream %s is missing; the queen is provisioning it again", q.cfg.Subjects.JobsStream())
	case bus.IsQueueFull(err):
		return schemas.Errorf(schemas.CodeQueueFull, "the %s queue is full", job.Model)
	default:
		q.keeper.recheck()
		return busError(ctx, fmt.Errorf("queue %s: %w", job, err))
	}
}

var errNoJobsStream = errors.New("no jobs stream")

// publishJob publishes msg, retrying through leader elections and
// reconnects, except when the jobs stream does not exist at all: then the
// request fails at once rather than wait for the keeper to make it.
func (q *Queen) publishJob(ctx context.Context, msg *nats.Msg) error {
	actx, cancel := context.WithTimeout(ctx, lookupTimeout)
	_, err := bus.Publish(actx, q.nc, msg)
	cancel()
	if err == nil || bus.IsQueueFull(err) {
		return err
	}
	if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		sctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		_, serr := q.js.Stream(sctx, q.cfg.Subjects.JobsStream())
		cancel()
		if errors.Is(serr, jetstream.ErrStreamNotFound) {
			return errNoJobsStream
		}
	}
	_, err = bus.PublishRetry(ctx, q.js, msg)
	return err
}

// busError turns a failure to reach the bus into a coded error: cancelled
// when the caller went away, bus_unavailable otherwise.
func busError(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return schemas.Wrap(schemas.CodeCancelled, err)
	}
	return schemas.Wrap(schemas.CodeBusUnavailable, err)
}

// wireError is err as it travels in responses: its code and message.
func wireError(err error) schemas.Error {
	if err == nil {
		return schemas.Error{}
	}
	var se *schemas.Error
	if errors.As(err, &se) {
		return *se
	}
	return *schemas.Errorf(schemas.CodeInternal, "%s", err.Error())
}

// logQueueError logs a job that could not be queued. A full queue is the
// back-pressure working, not a fault: under overload it would flood the
// log, and rbee_queen_requests_total{code="429"} counts it.
func (q *Queen) logQueueError(job schemas.Job, err error) {
	level := slog.LevelWarn
	if schemas.CodeOf(err) == schemas.CodeQueueFull {
		level = slog.LevelDebug
	}
	q.log.Log(context.Background(), level, "queue job", "job_id", job.ID, "model", job.Model, "err", err)
}
