package queen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// relay follows one job's events, as the router hands them over, and checks
// them against the contract: seq 0, 1, 2... across every delivery, then one
// end or error event.
type relay struct {
	q      *Queen
	job    schemas.Job
	start  time.Time
	next   int  // the seq expected next
	tokens int  // token events read
	done   bool // an end or error event arrived: the job has finished
	result string

	mu     sync.Mutex
	queue  []schemas.Event
	broken error
	wake   chan struct{}
	stored storedState // what the events stream holds for the job, as far as the router delivered it

	failure error // what ended the relay early, for the job's record

	// follower: the relay follows a job another request started (the same
	// idempotency key), with its own consumer, and does not own the job.
	follower bool
	follow   jetstream.ConsumeContext

	// signer checks the job's messages; nil for a job recorded by a queen
	// that gave it no key, whose messages are all taken.
	signer  *schemas.EventSigner
	audited bool // a forged message was audited: one event per job is enough
}

// storedState is the end of a job's stored events: where a terminal event
// written by the queen goes, fenced like a worker's.
type storedState struct {
	streamSeq uint64 // stream sequence of the job's last message
	nextSeq   int    // seq of the job's next event
	delivery  int    // delivery of the last event
	ended     bool   // the last event is terminal
}

func newRelay(q *Queen, job schemas.Job) *relay {
	// The job's key was checked when it was made or read back.
	signer, _ := job.EventKey.EventSigner()
	return &relay{q: q, job: job, start: time.Now(), wake: make(chan struct{}, 1), signer: signer}
}

// signed reports whether msg is the job's: signed with its key.
func (r *relay) signed(msg jetstream.Msg) bool {
	return r.signer == nil || r.signer.Verify(msg.Subject(), msg.Data(), msg.Headers().Get(schemas.HeaderEventMAC))
}

// forged passes over a message on the job's subject that its key did not
// sign, stored at streamSeq (0: unknown): it is counted, audited once per
// job, and a terminal event the queen writes goes after it, since the fence
// expects the subject's real last message.
func (r *relay) forged(streamSeq uint64) {
	r.q.metrics.forged.Inc()
	r.mu.Lock()
	r.stored.streamSeq = max(r.stored.streamSeq, streamSeq)
	first := !r.audited
	r.audited = true
	r.mu.Unlock()
	// A forger may write many: the log says so once per job, as the audit.
	level := slog.LevelDebug
	if first {
		level = slog.LevelWarn
	}
	r.q.log.Log(context.Background(), level, "ignored a message on the job's events subject that its key did not sign",
		"job_id", r.job.ID, "model", r.job.Model, "stream_seq", streamSeq)
	if first {
		r.q.auditor.Record(schemas.AuditEvent{Type: schemas.AuditEventForged, JobID: r.job.ID, Model: r.job.Model,
			Principal: r.job.Principal, Reason: fmt.Sprintf("stream sequence %d of %s", streamSeq, r.job.Stream)})
	}
}

// startRelay registers the job with the router and then queues it, so no
// event can arrive before someone follows it. With an idempotency key used
// before, it follows the job that use started instead.
func (q *Queen) startRelay(ctx context.Context, job schemas.Job, idempotencyKey string) (*relay, error) {
	rl := newRelay(q, job)
	rl.job.Stream = q.cfg.Subjects.JobEvents(q.cfg.ID, job.ID)
	if err := q.keeper.ready(); err != nil {
		return nil, err
	}
	if idempotencyKey != "" {
		original, fresh, err := q.claim(ctx, idempotencyKey, rl.job)
		if err != nil {
			return nil, err
		}
		if !fresh {
			return q.replay(ctx, original)
		}
	}
	if err := q.router.ensure(ctx); err != nil {
		q.keeper.recheck()
		if idempotencyKey != "" {
			q.release(ctx, idempotencyKey)
		}
		return nil, busError(ctx, err)
	}
	q.router.add(rl)
	// Queueing counts against the wait for the first event.
	qctx, cancel := context.WithDeadline(ctx, rl.firstEventBy())
	err := q.enqueue(qctx, &rl.job)
	cancel()
	if err != nil {
		q.router.remove(rl)
		if idempotencyKey != "" {
			q.release(ctx, idempotencyKey)
		}
		if ctx.Err() != nil {
			// The client left while the job was being published, which
			// may have stored it: cancel it and record its end, as for a
			// job the queen stops following.
			q.cancel(context.WithoutCancel(ctx), rl.job.ID)
			rl.fail(schemas.Wrap(schemas.CodeCancelled, err))
			rl.seal(q.log.With("job_id", rl.job.ID, "model", rl.job.Model))
		}
		return nil, err
	}
	q.metrics.jobsInFlight.Inc()
	q.log.Debug("job queued", "job_id", job.ID, "model", job.Model)
	q.auditor.Record(schemas.AuditEvent{Type: schemas.AuditJobAccepted, JobID: job.ID, Model: job.Model, Principal: job.Principal})
	return rl, nil
}

// firstEventBy is when the job's first event must have come: its deadline,
// or the first-token timeout if that is sooner.
func (r *relay) firstEventBy() time.Time {
	by := r.start.Add(r.q.live().FirstTokenTimeout)
	if !r.job.Deadline.IsZero() && r.job.Deadline.Before(by) {
		by = r.job.Deadline
	}
	return by
}

// push hands events over from the router, with the stream sequence of the
// message that held them, or the error that broke the stream.
func (r *relay) push(events []schemas.Event, streamSeq uint64, err error) {
	r.mu.Lock()
	r.queue = append(r.queue, events...)
	if n := len(events); n > 0 {
		last := events[n-1]
		r.stored = storedState{streamSeq: streamSeq, nextSeq: last.Seq + 1, delivery: last.Delivery, ended: last.Terminal()}
	}
	if err != nil && r.broken == nil {
		r.broken = err
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// queued reports whether events wait to be read.
func (r *relay) queued() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue) > 0
}

// pop returns the next queued event, if any.
func (r *relay) pop() (schemas.Event, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.queue) == 0 {
		return schemas.Event{}, false, r.broken
	}
	ev := r.queue[0]
	r.queue = r.queue[1:]
	return ev, true, nil
}

// recv returns the next token or end event. An error event comes back as
// its *schemas.Error; a broken stream, a timeout or ctx ending as an error
// with the matching code. After an end event or any error, call close.
func (r *relay) recv(ctx context.Context) (schemas.Event, error) {
	for {
		ev, ok, err := r.pop()
		switch {
		case err != nil:
			return schemas.Event{}, r.fail(err)
		case !ok:
			if err := r.wait(ctx); err != nil {
				return schemas.Event{}, r.fail(err)
			}
			continue
		case ev.JobID != r.job.ID:
			return schemas.Event{}, r.fail(schemas.Errorf(schemas.CodeInternal, "event of job %q in the stream of job %q", ev.JobID, r.job.ID))
		case ev.Seq < r.next:
			continue // cannot be stored twice, but a repeat would be harmless
		case ev.Seq > r.next:
			r.q.log.Warn("job events lost", "job_id", r.job.ID, "model", r.job.Model,
				"seq", ev.Seq, "want_seq", r.next, "worker_id", ev.WorkerID)
			return schemas.Event{}, r.fail(schemas.Errorf(schemas.CodeInternal, "job events lost"))
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
}

// wait blocks until events arrive, ctx ends or the stream stalls: the
// first event is due by the job's deadline (or the first-token timeout),
// each next one within the idle timeout, and nothing after the deadline.
func (r *relay) wait(ctx context.Context) error {
	deadline := time.Now().Add(r.q.live().IdleTimeout)
	if r.next == 0 {
		deadline = r.firstEventBy()
	}
	if !r.job.Deadline.IsZero() && r.job.Deadline.Before(deadline) {
		deadline = r.job.Deadline
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-r.wake:
		return nil
	case <-ctx.Done():
		if cause := context.Cause(ctx); errors.Is(cause, errShuttingDown) {
			return cause
		}
		return schemas.Wrap(schemas.CodeCancelled, fmt.Errorf("client went away: %w", context.Cause(ctx)))
	case <-t.C:
	}
	switch {
	case !r.job.Deadline.IsZero() && !time.Now().Before(r.job.Deadline):
		return schemas.Errorf(schemas.CodeDeadlineExceeded, "job %s passed its deadline %s", r.job.ID, r.job.Deadline.Format(time.RFC3339Nano))
	case r.next == 0:
		return schemas.Errorf(schemas.CodeTimeout, "no worker started job %s within %s", r.job.ID, r.q.live().FirstTokenTimeout)
	default:
		return schemas.Errorf(schemas.CodeTimeout, "the worker sent nothing for %s", r.q.live().IdleTimeout)
	}
}

func (r *relay) fail(err error) error {
	r.result = string(wireError(err).Code)
	r.failure = err
	return err
}

// close stops following the job. When it has not finished (the client
// went away, the stream broke or stalled) it cancels the job, whether it
// runs or still waits in the queue: nobody reads its tokens any more.
func (r *relay) close() {
	log := r.q.log.With("job_id", r.job.ID, "model", r.job.Model)
	if r.follower {
		r.follow.Stop()
	} else {
		r.q.router.remove(r)
		if !r.done {
			r.q.cancel(context.Background(), r.job.ID)
			r.seal(log)
		}
	}
	if r.result == "" {
		r.result = string(schemas.CodeCancelled)
	}
	r.q.metrics.jobsInFlight.Dec()
	r.q.metrics.jobs.WithLabelValues(r.job.Model, r.result).Inc()
	log.Info("job finished", "result", r.result, "tokens", r.tokens,
		"duration", time.Since(r.start), "cancelled", !r.done)
}

// seal ends the stream of a job the queen stopped following before it
// finished, with the error that stopped it (cancelled when the client just
// left), so that the job's record ends in one terminal state even when no
// worker ever takes it. The write is fenced on the job's last stored
// message: when a worker wrote after it, the write fails and the worker,
// which sees the cancel, ends the stream itself; a worker that writes after
// the seal finds the stream ended and stops.
func (r *relay) seal(log *slog.Logger) {
	r.mu.Lock()
	stored := r.stored
	r.mu.Unlock()
	if stored.ended {
		return
	}
	failure := r.failure
	if failure == nil {
		failure = schemas.Errorf(schemas.CodeCancelled, "the client went away")
	}
	e := wireError(failure)
	if e.Code == schemas.CodeInternal {
		// The queen could not follow the stream; the job may be fine.
		e = *schemas.Errorf(schemas.CodeCancelled, "cancelled by the queen, which could not follow it: %s", e.Message)
	}
	ev := schemas.Event{JobID: r.job.ID, Seq: stored.nextSeq, Type: schemas.EventError, Delivery: max(stored.delivery, 1), Error: &e}
	data, err := schemas.EncodeEvents([]schemas.Event{ev})
	if err != nil {
		log.Warn("encode the job's last event", "err", err)
		return
	}
	msg := &nats.Msg{Subject: r.job.Stream, Data: data}
	if r.signer != nil {
		msg.Header = nats.Header{schemas.HeaderEventMAC: {r.signer.Sign(r.job.Stream, data)}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
	defer cancel()
	_, err = r.q.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(stored.streamSeq))
	switch {
	case err == nil:
		log.Debug("job's stream ended by the queen", "code", e.Code)
	case bus.IsWrongLastSequence(err):
		log.Debug("a worker wrote to the job's stream meanwhile; it ends the stream", "code", e.Code)
	default:
		log.Warn("end the job's stream", "err", err)
	}
}
