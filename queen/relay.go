package queen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/schemas"
)

// relay reads one job's events from its reply subject and checks them
// against the contract: seq 0, 1, 2... then one end or error event.
type relay struct {
	q      *Queen
	job    schemas.Job
	sub    *nats.Subscription
	start  time.Time
	next   int  // the seq expected next
	tokens int  // token events read
	done   bool // an end or error event arrived: the worker has finished
	result string
}

// startRelay subscribes to a fresh reply subject and then queues job with
// it, so that no event can arrive before the subscription exists.
func (q *Queen) startRelay(ctx context.Context, job schemas.Job) (*relay, error) {
	// NewInbox, not NewRespInbox: a response inbox also matches the
	// connection's request multiplexer, which would receive every token
	// a second time.
	inbox := q.nc.NewInbox()
	sub, err := q.nc.SubscribeSync(inbox)
	if err != nil {
		return nil, busError(ctx, fmt.Errorf("subscribe to %s: %w", inbox, err))
	}
	job.Reply = inbox
	start := time.Now()
	// Queueing counts against the wait for the first event.
	qctx, cancel := context.WithTimeout(ctx, q.cfg.FirstTokenTimeout)
	err = q.enqueue(qctx, &job)
	cancel()
	if err != nil {
		if uerr := sub.Unsubscribe(); uerr != nil {
			q.log.Debug("unsubscribe reply subject", "job_id", job.ID, "err", uerr)
		}
		return nil, err
	}
	q.metrics.jobsInFlight.Inc()
	q.log.Debug("job queued", "job_id", job.ID, "model", job.Model)
	return &relay{q: q, job: job, sub: sub, start: start}, nil
}

// recv returns the next token or end event. An error event comes back as
// its *schemas.Error; a broken stream, a timeout or ctx ending as an error
// with the matching code. After an end event or any error, call close.
func (r *relay) recv(ctx context.Context) (schemas.Event, error) {
	deadline := time.Now().Add(r.q.cfg.IdleTimeout)
	if r.next == 0 {
		deadline = r.start.Add(r.q.cfg.FirstTokenTimeout)
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	msg, err := r.sub.NextMsgWithContext(wctx)
	cancel()
	if err != nil {
		return schemas.Event{}, r.fail(r.waitError(ctx, err))
	}
	if len(msg.Data) == 0 {
		return schemas.Event{}, r.fail(schemas.Errorf(schemas.CodeInternal, "token stream closed before its end event"))
	}
	var ev schemas.Event
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		return schemas.Event{}, r.fail(schemas.Errorf(schemas.CodeInternal, "decode token stream event: %v", err))
	}
	if err := ev.Validate(); err != nil {
		return schemas.Event{}, r.fail(schemas.Errorf(schemas.CodeInternal, "invalid token stream event: %v", err))
	}
	if ev.JobID != "" && ev.JobID != r.job.ID {
		return schemas.Event{}, r.fail(schemas.Errorf(schemas.CodeInternal, "event of job %q on the reply subject of job %q", ev.JobID, r.job.ID))
	}
	if ev.Seq != r.next {
		r.q.log.Warn("token stream lost events", "job_id", r.job.ID, "model", r.job.Model,
			"seq", ev.Seq, "want_seq", r.next, "worker_id", ev.WorkerID)
		return schemas.Event{}, r.fail(schemas.Errorf(schemas.CodeInternal, "token stream lost events"))
	}
	r.next++
	switch ev.Type {
	case schemas.EventToken:
		r.tokens++
		r.q.metrics.tokens.WithLabelValues(r.job.Model).Inc()
		if r.tokens == 1 {
			r.q.metrics.firstToken.WithLabelValues(r.job.Model).Observe(time.Since(r.start).Seconds())
		}
	case schemas.EventEnd:
		r.done = true
		r.result = ev.StopReason
	case schemas.EventError:
		r.done = true
		e := *ev.Error
		r.result = string(e.Code)
		return ev, &e
	}
	return ev, nil
}

func (r *relay) waitError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return &codedError{code: schemas.CodeCancelled, err: fmt.Errorf("client went away: %w", context.Cause(ctx))}
	case errors.Is(err, context.DeadlineExceeded) && r.next == 0:
		return schemas.Errorf(schemas.CodeTimeout, "no worker started job %s within %s", r.job.ID, r.q.cfg.FirstTokenTimeout)
	case errors.Is(err, context.DeadlineExceeded):
		return schemas.Errorf(schemas.CodeTimeout, "the worker sent nothing for %s", r.q.cfg.IdleTimeout)
	default:
		return &codedError{code: schemas.CodeBusUnavailable, err: fmt.Errorf("read token stream: %w", err)}
	}
}

func (r *relay) fail(err error) error {
	r.result = string(wireError(err).Code)
	return err
}

// close unsubscribes. When the worker has not finished (the client went
// away, the stream broke or stalled) it tells the worker to stop the job:
// nobody reads its tokens any more.
func (r *relay) close() {
	log := r.q.log.With("job_id", r.job.ID, "model", r.job.Model)
	if err := r.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Debug("unsubscribe reply subject", "err", err)
	}
	if !r.done {
		if err := r.q.nc.Publish(r.q.cfg.Subjects.Cancel(r.job.ID), nil); err != nil {
			log.Warn("publish job cancel", "err", err)
		}
	}
	if r.result == "" {
		r.result = string(schemas.CodeCancelled)
	}
	r.q.metrics.jobsInFlight.Dec()
	r.q.metrics.jobs.WithLabelValues(r.job.Model, r.result).Inc()
	log.Info("job finished", "result", r.result, "tokens", r.tokens,
		"duration", time.Since(r.start), "cancel_sent", !r.done)
}
