package worker

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/schemas"
)

// Causes of a job's context ending early.
var (
	errCancelled = errors.New("cancelled on the cancel subject")
	errShutdown  = errors.New("shutdown grace expired")
	errLeaseLost = errors.New("job lease lost")
)

// ackProgress is JetStream's in-progress ack. Sent as a request, unlike
// jetstream.Msg.InProgress, it is answered, so a renewal is known to count.
const ackProgress = "+WPI"

// action is what happens to a job's message once the job has ended.
type action int

const (
	// actAck removes the job: it ended, and the client was told how.
	actAck action = iota
	// actNak requeues the job for another worker: the client saw nothing.
	actNak
	// actTerm removes the job without an answer the client can use: it saw
	// part of one, and a retry would send that part twice.
	actTerm
)

// settle decides how a generation that returned err ends, given the cause
// of the job's context ending (nil while it has not) and whether token
// events went out. A code of "" means success.
func settle(err, cause error, streamed bool) (schemas.Code, action) {
	if err == nil {
		return "", actAck
	}
	interrupted := func(code schemas.Code) (schemas.Code, action) {
		if !streamed {
			return "", actNak
		}
		return code, actTerm
	}
	switch {
	case errors.Is(cause, errShutdown):
		return interrupted(schemas.CodeWorkerShutdown)
	case errors.Is(cause, errLeaseLost):
		return interrupted(schemas.CodeBusUnavailable)
	case errors.Is(cause, errCancelled):
		return schemas.CodeCancelled, actAck
	case errors.Is(err, infer.ErrContextExceeded):
		return schemas.CodeContextExceeded, actAck
	case errors.Is(err, infer.ErrTemplate):
		return schemas.CodeTemplateError, actAck
	default:
		return schemas.CodeEngineFailure, actAck
	}
}

// replies publishes one job's events with consecutive sequence numbers.
type replies struct {
	nc       *nats.Conn
	subject  string
	jobID    string
	workerID string
	seq      int
	tokens   int // token events sent
}

func (r *replies) send(ev schemas.Event) error {
	ev.JobID, ev.WorkerID, ev.Seq = r.jobID, r.workerID, r.seq
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	if err := r.nc.Publish(r.subject, data); err != nil {
		return err
	}
	r.seq++
	if ev.Type == schemas.EventToken {
		r.tokens++
	}
	return nil
}

// finish sends the last event and the empty message that closes the stream.
func (r *replies) finish(ev schemas.Event) error {
	if err := r.send(ev); err != nil {
		return err
	}
	return r.nc.Publish(r.subject, nil)
}

func (r *replies) fail(code schemas.Code, msg string) error {
	return r.finish(schemas.Event{Type: schemas.EventError, Error: &schemas.Error{Code: code, Message: msg}})
}

// usableReply reports whether a reply subject read from a job that failed
// validation can still be published to.
func usableReply(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n*>")
}

// handle runs one job pulled from the queue, from decoding to the ack.
func (w *Worker) handle(ctx context.Context, log *slog.Logger, msg jetstream.Msg) {
	taken := time.Now()
	w.addBusy(1)
	defer w.addBusy(-1)

	var queuedAt time.Time
	if meta, err := msg.Metadata(); err == nil {
		queuedAt = meta.Timestamp
		if meta.NumDelivered > 1 {
			log.Info("job redelivered", "job_id", msg.Headers().Get(schemas.HeaderMsgID), "delivery", meta.NumDelivered)
		}
	}
	var job schemas.Job
	if err := json.Unmarshal(msg.Data(), &job); err != nil {
		w.reject(log, msg, job, schemas.Errorf(schemas.CodeInvalidRequest, "decode job: %v", err))
		return
	}
	if err := job.Validate(); err != nil {
		w.reject(log, msg, job, err)
		return
	}
	if job.Model != w.cfg.Model {
		w.reject(log, msg, job, schemas.Errorf(schemas.CodeModelNotFound,
			"job for model %q reached a worker of %q", job.Model, w.cfg.Model))
		return
	}
	if job.Expired(taken) {
		w.reject(log, msg, job, schemas.Errorf(schemas.CodeTimeout,
			"job waited in the queue past its deadline %s", job.ExpiresAt.Format(time.RFC3339)))
		return
	}
	if !job.CreatedAt.IsZero() {
		queuedAt = job.CreatedAt
	}
	w.run(ctx, log.With("job_id", job.ID), msg, job, taken, queuedAt)
}

// reject answers a job that cannot run and terminates its message, so that
// poison input is never redelivered.
func (w *Worker) reject(log *slog.Logger, msg jetstream.Msg, job schemas.Job, err error) {
	id := job.ID
	if id == "" {
		id = msg.Headers().Get(schemas.HeaderMsgID)
	}
	log = log.With("job_id", id)
	code := schemas.CodeOf(err)
	log.Warn("job rejected", "code", code, "err", err)
	if usableReply(job.Reply) {
		r := &replies{nc: w.nc, subject: job.Reply, jobID: job.ID, workerID: w.cfg.ID}
		if perr := r.fail(code, err.Error()); perr != nil {
			log.Warn("publish rejection", "err", perr)
		}
	}
	if terr := msg.TermWithReason(string(code)); terr != nil {
		log.Warn("terminate rejected job", "err", terr)
	}
	w.metrics.jobs.WithLabelValues(string(code)).Inc()
	if id != "" && schemas.ValidID(id) {
		w.audit(log, msg, schemas.AuditEvent{JobID: id, Outcome: string(code)})
	}
}

// run generates a valid job's answer in the worker's batch and settles its
// message.
func (w *Worker) run(ctx context.Context, log *slog.Logger, msg jetstream.Msg, job schemas.Job, taken, queuedAt time.Time) {
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if sub, err := w.nc.Subscribe(w.cfg.Subjects.Cancel(job.ID), func(*nats.Msg) { cancel(errCancelled) }); err != nil {
		log.Warn("subscribe to the cancel subject; the job cannot be cancelled", "err", err)
	} else {
		defer func() {
			if err := sub.Unsubscribe(); err != nil {
				log.Debug("unsubscribe from the cancel subject", "err", err)
			}
		}()
	}
	var lease sync.WaitGroup
	leaseCtx, stopLease := context.WithCancel(jobCtx)
	lease.Go(func() { w.keepLease(leaseCtx, log, msg, cancel) })

	out := &replies{nc: w.nc, subject: job.Reply, jobID: job.ID, workerID: w.cfg.ID}
	log.Debug("job started", "prompt_bytes", len(job.Prompt), "messages", len(job.Messages), "max_tokens", job.MaxTokens)
	res, err := w.sched.Generate(jobCtx, request(job), func(t infer.Token) error {
		id := t.ID
		return out.send(schemas.Event{Type: schemas.EventToken, Text: t.Text, TokenID: &id})
	})
	stopLease()
	lease.Wait()
	w.observe(res)

	code, act := settle(err, context.Cause(jobCtx), out.tokens > 0)
	var perr error
	var usage *schemas.Usage
	var jobTimings *schemas.Timings
	switch {
	case act == actNak:
		// The client has seen nothing and will see the job's next run.
	case code == "":
		usage = &schemas.Usage{PromptTokens: len(res.PromptIDs), CompletionTokens: len(res.GeneratedIDs)}
		usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
		jobTimings = timings(res.Timings, taken, queuedAt)
		perr = out.finish(schemas.Event{
			Type: schemas.EventEnd, StopReason: res.StopReason, Usage: usage, Timings: jobTimings,
		})
		log.Info("job done", "stop_reason", res.StopReason, "prompt_tokens", usage.PromptTokens,
			"completion_tokens", usage.CompletionTokens, "decode_tokens_per_second", res.Timings.DecodeTokensPerSecond())
	default:
		cause := err
		if c := context.Cause(jobCtx); c != nil {
			cause = c
		}
		perr = out.fail(code, cause.Error())
		log.Info("job failed", "code", code, "err", err, "tokens_sent", out.tokens)
	}
	if perr != nil {
		log.Warn("publish the end of the token stream", "err", perr)
	}

	outcome := outcomeCompleted
	switch act {
	case actAck:
		if code != "" {
			outcome = string(code)
		}
		actx, cancelAck := context.WithTimeout(context.WithoutCancel(ctx), busTimeout)
		if err := msg.DoubleAck(actx); err != nil {
			log.Warn("ack job; it may run again", "err", err)
		}
		cancelAck()
	case actNak:
		outcome = outcomeRequeued
		log.Info("job handed back to the queue before its first token", "reason", context.Cause(jobCtx))
		if err := msg.Nak(); err != nil {
			log.Warn("hand back job; it returns when its lease ends", "err", err)
		}
	case actTerm:
		outcome = string(code)
		if err := msg.TermWithReason(string(code)); err != nil {
			log.Warn("terminate interrupted job", "err", err)
		}
	}
	w.metrics.jobs.WithLabelValues(outcome).Inc()
	w.audit(log, msg, schemas.AuditEvent{JobID: job.ID, Outcome: outcome, Usage: usage, Timings: jobTimings})
}

// audit publishes a job.finished event; the events stream keeps it. Core
// NATS is enough: losing an audit record while the server is unreachable
// must not hold up jobs.
func (w *Worker) audit(log *slog.Logger, msg jetstream.Msg, ev schemas.AuditEvent) {
	ev.Type, ev.Time = schemas.AuditJobFinished, time.Now().UTC()
	ev.WorkerID, ev.HiveID, ev.Model = w.cfg.ID, w.cfg.HiveID, w.cfg.Model
	if meta, err := msg.Metadata(); err == nil {
		ev.Delivery = int(meta.NumDelivered)
	}
	data, err := json.Marshal(ev)
	if err == nil {
		err = w.nc.Publish(w.cfg.Subjects.Events(ev.Type), data)
	}
	if err != nil {
		log.Warn("publish audit event", "type", ev.Type, "err", err)
	}
}

// keepLease renews msg's lease every AckWait/3 until ctx is done. The
// server restarts the lease when it takes a renewal, which is before its
// answer arrives, so the lease lapses at the latest AckWait after the last
// answer: a renewal may wait for its answer until then, and when none came
// by then the job may be running elsewhere and is stopped.
func (w *Worker) keepLease(ctx context.Context, log *slog.Logger, msg jetstream.Msg, stop context.CancelCauseFunc) {
	t := time.NewTicker(w.cfg.AckWait / 3)
	defer t.Stop()
	lapses := time.Now().Add(w.cfg.AckWait)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithDeadline(ctx, lapses)
		_, err := w.nc.RequestWithContext(rctx, msg.Reply(), []byte(ackProgress))
		cancel()
		switch {
		case err == nil:
			lapses = time.Now().Add(w.cfg.AckWait)
		case ctx.Err() != nil:
			return
		case !time.Now().Before(lapses):
			log.Error("job lease lost; stopping the job", "err", err, "lapsed", lapses)
			stop(errLeaseLost)
			return
		default:
			log.Warn("renew job lease; retrying", "err", err)
		}
	}
}

// request maps a job onto the engine's request.
func request(job schemas.Job) infer.Request {
	req := infer.Request{Prompt: job.Prompt, MaxTokens: job.MaxTokens, Stop: job.Stop, Sampling: params(job.Sampling)}
	for _, m := range job.Messages {
		req.Messages = append(req.Messages, chat.Message{Role: m.Role, Content: m.Content})
	}
	return req
}

// params maps the wire's sampling options onto the sampler's: a missing
// temperature is OpenAI's default of 1, and 0 is greedy.
func params(s schemas.Sampling) sample.Params {
	p := sample.Params{
		Temperature:      1,
		TopK:             s.TopK,
		TopP:             float32(s.TopP),
		MinP:             float32(s.MinP),
		RepeatPenalty:    float32(s.RepeatPenalty),
		PresencePenalty:  float32(s.PresencePenalty),
		FrequencyPenalty: float32(s.FrequencyPenalty),
	}
	if s.Temperature != nil {
		p.Temperature = float32(*s.Temperature)
	}
	if s.Seed != nil {
		p.Seed, p.HasSeed = uint64(*s.Seed), true
	}
	return p
}

// timings reports a finished job: queue time until this worker took it,
// the engine's rates, and the total from taking it to now.
func timings(t infer.Timings, taken, queuedAt time.Time) *schemas.Timings {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	out := &schemas.Timings{
		TimeToFirstMillis:  ms(t.TimeToFirstToken),
		PromptTokensPerSec: t.PromptTokensPerSecond(),
		DecodeTokensPerSec: t.DecodeTokensPerSecond(),
		TotalMillis:        ms(time.Since(taken)),
	}
	if !queuedAt.IsZero() {
		// Clocks of other machines may run ahead of ours.
		out.QueueMillis = ms(max(taken.Sub(queuedAt), 0))
	}
	return out
}
