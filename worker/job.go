package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/infer/grammar"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/schemas"
)

// Causes of a job's context ending early.
var (
	errCancelled = errors.New("cancelled")
	errShutdown  = errors.New("shutdown grace expired")
	errLeaseLost = errors.New("job lease lost")
	errDeadline  = errors.New("the job's deadline passed")
)

// ackProgress is JetStream's in-progress ack. Sent as a request, unlike
// jetstream.Msg.InProgress, it is answered, so a renewal is known to count.
const ackProgress = "+WPI"

// action is what happens to a job's message once the job has ended.
type action int

const (
	// actAck removes the job: its stream ended with an end or error event.
	actAck action = iota
	// actNak requeues the job: its stream has not ended, and the worker
	// that takes it next resumes from what the stream holds, so the
	// client's stream goes on where it stopped.
	actNak
	// actLeave does nothing: another worker holds the job now.
	actLeave
)

// settle decides how a generation that returned err ends, given the cause
// of the job's context ending (nil while it has not): the code of the
// error event that ends its stream ("" for the end event, or none when
// the action is not actAck) and what happens to the message.
func settle(err, cause error) (schemas.Code, action) {
	if err == nil {
		return "", actAck
	}
	switch {
	case errors.Is(cause, errShutdown):
		return "", actNak
	case errors.Is(cause, errLeaseLost), errors.Is(cause, errFenced):
		return "", actLeave
	case errors.Is(cause, errEnded):
		return "", actAck
	case errors.Is(cause, errCancelled):
		return schemas.CodeCancelled, actAck
	case errors.Is(cause, errDeadline):
		return schemas.CodeDeadlineExceeded, actAck
	case errors.Is(err, infer.ErrContextExceeded):
		return schemas.CodeContextExceeded, actAck
	case errors.Is(err, infer.ErrTemplate):
		return schemas.CodeTemplateError, actAck
	case errors.Is(err, infer.ErrSampling):
		return schemas.CodeInvalidRequest, actAck
	case errors.Is(err, infer.ErrKVExhausted):
		return schemas.CodeNoCapacity, actAck
	default:
		return schemas.CodeEngineFailure, actAck
	}
}

// handle runs one job pulled from the queue, from decoding to the ack.
func (w *Worker) handle(ctx context.Context, log *slog.Logger, msg jetstream.Msg) {
	taken := time.Now()
	w.addBusy(1)
	defer w.addBusy(-1)

	var queuedAt time.Time
	delivery := 1
	if meta, err := msg.Metadata(); err == nil {
		queuedAt, delivery = meta.Timestamp, int(meta.NumDelivered)
		if delivery > 1 {
			log.Info("job redelivered", "job_id", msg.Headers().Get(schemas.HeaderMsgID), "delivery", delivery)
		}
	}
	var job schemas.Job
	if err := schemas.UnmarshalJob(msg.Data(), &job); err != nil {
		log = log.With("job_id", msg.Headers().Get(schemas.HeaderMsgID), "delivery", delivery)
		job.Principal = principalOf(msg)
		w.deadLetter(log, msg, job, delivery, schemas.Errorf(schemas.CodeInvalidRequest, "decode job: %v", err))
		return
	}
	log = log.With("job_id", job.ID, "delivery", delivery, "principal", job.Principal)
	if err := job.Validate(); err != nil {
		w.deadLetter(log, msg, job, delivery, err)
		return
	}
	if job.Model != w.cfg.Model {
		w.deadLetter(log, msg, job, delivery, schemas.Errorf(schemas.CodeModelNotFound,
			"job for model %q reached a worker of %q", job.Model, w.cfg.Model))
		return
	}
	if !job.CreatedAt.IsZero() {
		queuedAt = job.CreatedAt
	}
	w.run(ctx, log, msg, job, delivery, taken, queuedAt)
}

// exhausted reports whether delivery is the one after the last attempt the
// jobs consumer allows: the job is dead-lettered instead of run.
func (w *Worker) exhausted(delivery int) bool {
	md := w.maxDeliver.Load()
	return md > 1 && int64(delivery) >= md
}

// deadLetter gives up on a job that cannot run (poison input is never
// redelivered) or ran out of attempts. It keeps the job's message, as queued, in the dead-letter stream,
// ends the job's stream with err's code, and terminates the message so it
// is never delivered again. The answer goes to the job's stream only when
// that is a job events subject: a worker never publishes where a job it
// could not read points it. When the dead-letter stream cannot take the
// job, it is handed back instead: never dropped.
func (w *Worker) deadLetter(log *slog.Logger, msg jetstream.Msg, job schemas.Job, delivery int, err error) {
	id := job.ID
	if id == "" {
		id = msg.Headers().Get(schemas.HeaderMsgID)
	}
	code := schemas.CodeOf(err)
	reason := err.Error()
	if e := (*schemas.Error)(nil); errors.As(err, &e) {
		reason = e.Message
	}
	log.Warn("job dead-lettered", "code", code, "reason", reason)
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	d := bus.DeadLetter{JobID: id, Subject: msg.Subject(), Data: msg.Data(), Code: code, Reason: reason,
		Deliveries: delivery, Worker: w.cfg.ID}
	if !schemas.ValidID(id) {
		d.JobID = ""
	}
	if perr := bus.PublishDeadLetter(ctx, w.js, w.cfg.Subjects, d); perr != nil {
		log.Error("dead-letter the job; handing it back", "err", perr)
		w.settleMsg(log, msg, actNak)
		return
	}
	if schemas.ValidID(job.ID) && w.ownStream(job) {
		es := newEventStream(w.js, w.eventsStream, job, w.cfg.ID, delivery, func(error) {})
		w.endStream(log, es, code, reason)
	}
	if terr := msg.TermWithReason(string(code)); terr != nil {
		log.Warn("terminate the dead-lettered job", "err", terr)
	}
	w.metrics.jobs.WithLabelValues(string(code)).Inc()
	if schemas.ValidID(id) {
		w.audit(msg, schemas.AuditEvent{JobID: id, Principal: job.Principal, Outcome: string(code)})
	}
}

// endStream publishes one terminal error event on a stream nobody else
// writes to at the moment and waits for it.
func (w *Worker) endStream(log *slog.Logger, es *eventStream, code schemas.Code, msg string) {
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	if _, err := es.resume(ctx); err != nil {
		log.Warn("read the job's events", "err", err)
	}
	es.add(schemas.Event{Type: schemas.EventError, Error: schemas.Errorf(code, "%s", msg)})
	es.close()
	go es.run(ctx)
	if err := es.wait(); err != nil {
		log.Warn("publish the job's error event", "err", err)
	}
}

// ownStream reports whether the job names its own events subject: a job
// may not have its worker write into another job's stream, or anywhere
// else.
func (w *Worker) ownStream(job schemas.Job) bool {
	id, ok := w.cfg.Subjects.JobOfEvents(job.Stream)
	return ok && id == job.ID
}

// run generates a valid job's answer in the worker's batch, publishing its
// events on the job's stream, and settles its message.
func (w *Worker) run(ctx context.Context, log *slog.Logger, msg jetstream.Msg, job schemas.Job, delivery int, taken, queuedAt time.Time) {
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if !w.ownStream(job) {
		w.deadLetter(log, msg, job, delivery, schemas.Errorf(schemas.CodeInvalidRequest,
			"stream %q: want the job's own events subject %s", job.Stream, w.cfg.Subjects.JobEvents("<owner>", job.ID)))
		return
	}
	es := newEventStream(w.js, w.eventsStream, job, w.cfg.ID, delivery, cancel)
	rctx, rcancel := context.WithTimeout(ctx, busTimeout)
	state, err := es.resume(rctx)
	rcancel()
	switch {
	case err != nil:
		// The bus cannot tell what was sent: leave the job to a later try,
		// handed back at once while its lease holds. Once the lease has
		// lapsed the job is on its way again, and a Nak would hand back
		// that delivery, spending another attempt.
		if time.Since(taken) >= w.lease() {
			log.Warn("read the job's events; leaving the job to its redelivery, its lease has lapsed", "err", err)
			return
		}
		log.Warn("read the job's events; handing the job back", "err", err)
		w.settleMsg(log, msg, actNak)
		return
	case state.newer:
		log.Info("a newer delivery already holds the job")
		return
	case state.ended:
		log.Info("the job's events already ended; acknowledging it")
		w.settleMsg(log, msg, actAck)
		return
	case w.exhausted(delivery):
		w.deadLetter(log, msg, job, delivery, schemas.Errorf(schemas.CodeDeadLettered,
			"none of the job's %d attempts ended (its workers stopped on it); it is kept as a dead letter",
			delivery-1))
		return
	}
	if state.forged > 0 {
		log.Warn("messages on the job's events subject that its key did not sign were passed over", "messages", state.forged)
	}
	if len(state.tokens) > 0 {
		log.Info("job taken over: resuming", "tokens_sent", len(state.tokens))
	}
	if job.Expired(taken) {
		w.finishEarly(ctx, log, msg, es, job, schemas.CodeDeadlineExceeded,
			fmt.Sprintf("the job's deadline %s passed before it started", job.Deadline.Format(time.RFC3339Nano)))
		return
	}
	cancelled, unwatch := w.cancelWatch.begin(ctx, log, job.ID, func() { cancel(errCancelled) })
	defer unwatch()
	if cancelled {
		w.finishEarly(ctx, log, msg, es, job, schemas.CodeCancelled, "the job was cancelled before it started")
		return
	}
	req, err := request(job)
	var prefix string
	if err == nil {
		prefix, err = toolRequest(job, w.aux.model.ToolFormat(), &req)
	}
	if err != nil {
		w.finishEarly(ctx, log, msg, es, job, schemas.CodeOf(err), err.Error())
		return
	}
	if !job.Deadline.IsZero() {
		var stopDeadline context.CancelFunc
		jobCtx, stopDeadline = context.WithDeadlineCause(jobCtx, job.Deadline, errDeadline)
		defer stopDeadline()
	}

	if !job.Generates() {
		w.runAux(ctx, jobCtx, cancel, log, msg, es, job, taken, queuedAt)
		return
	}

	// The publisher outlives the job's context: the events that end the
	// stream still go out after a cancel or a deadline.
	var bg sync.WaitGroup
	pubCtx, stopPub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPub()
	bg.Go(func() { es.run(pubCtx) })
	leaseCtx, stopLease := context.WithCancel(jobCtx)
	bg.Go(func() { w.keepLease(leaseCtx, log, msg, cancel) })

	log.Debug("job started", "prompt_bytes", len(job.Prompt), "messages", len(job.Messages), "max_tokens", job.MaxTokens)
	produced := len(state.tokens) // resumed tokens count against max_tokens
	results, err := w.generate(jobCtx, job, req, state, func(i int, t infer.Token) {
		id := t.ID
		ev := schemas.Event{Type: schemas.EventToken, Index: i, Text: t.Text, TokenID: &id, Logprobs: wireLogprobs(t.Logprobs)}
		if i == 0 && id >= 0 {
			produced++
		}
		// A single choice's last token is followed at once by the end
		// event: they go out together, one message instead of two.
		if job.N <= 1 && job.MaxTokens > 0 && produced >= job.MaxTokens {
			es.hold(ev)
		} else {
			es.add(ev)
		}
		w.progress.Add(1)
	})
	stopLease()
	for _, r := range results {
		w.observe(r)
	}
	res := results[0]

	code, act := settle(err, context.Cause(jobCtx))
	var usage *schemas.Usage
	var jobTimings *schemas.Timings
	switch {
	case act != actAck || errors.Is(context.Cause(jobCtx), errEnded):
	case code == "":
		end := endOf(results)
		if end.ToolCalls = toolCalls(job, w.aux.model.ToolFormat(), prefix, res.Text); len(end.ToolCalls) > 0 {
			end.StopReason = schemas.StopReasonToolCalls
		}
		usage = end.Usage
		jobTimings = timings(res.Timings, taken, queuedAt)
		end.Timings = jobTimings
		es.add(end)
		log.Info("job done", "stop_reason", res.StopReason, "prompt_tokens", usage.PromptTokens,
			"completion_tokens", usage.CompletionTokens, "decode_tokens_per_second", res.Timings.DecodeTokensPerSecond())
	default:
		cause := err
		if c := context.Cause(jobCtx); c != nil {
			cause = c
		}
		es.add(schemas.Event{Type: schemas.EventError, Error: schemas.Errorf(code, "%s", cause.Error())})
		log.Info("job failed", "code", code, "err", err, "tokens_sent", es.sentTokens())
	}
	if act == actAck {
		// What is queued goes out, within a lease: past it, the job is
		// someone else's anyway.
		es.close()
		flush := time.AfterFunc(w.lease(), stopPub)
		defer flush.Stop()
	} else {
		stopPub()
	}
	outcome := es.wait()
	bg.Wait()
	switch {
	case act == actAck && errors.Is(outcome, errFenced):
		act = actLeave
	case act == actAck && outcome != nil && !errors.Is(outcome, errEnded):
		log.Warn("publish the job's events; handing the job back", "err", outcome)
		act = actNak
	}
	w.settleMsg(log, msg, act)
	w.record(log, msg, job, act, code, usage, jobTimings)
}

// finishEarly ends a job that never started with one error event.
func (w *Worker) finishEarly(ctx context.Context, log *slog.Logger, msg jetstream.Msg, es *eventStream, job schemas.Job, code schemas.Code, why string) {
	log.Info("job not started", "code", code, "reason", why)
	es.add(schemas.Event{Type: schemas.EventError, Error: schemas.Errorf(code, "%s", why)})
	es.close()
	pctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	go es.run(pctx)
	act := actAck
	if err := es.wait(); errors.Is(err, errFenced) {
		act = actLeave
	} else if err != nil && !errors.Is(err, errEnded) {
		log.Warn("publish the job's error event; handing the job back", "err", err)
		act = actNak
	}
	w.settleMsg(log, msg, act)
	w.record(log, msg, job, act, code, nil, nil)
}

// settleMsg acks, naks or leaves the job's message.
func (w *Worker) settleMsg(log *slog.Logger, msg jetstream.Msg, act action) {
	switch act {
	case actAck:
		// Not waiting for the server's answer: an ack that is lost only
		// means the job comes back after its lease, to a worker that
		// finds its stream ended and acks it then.
		if err := msg.Ack(); err != nil {
			log.Warn("ack job; it may come back, and its stream tells the next worker it is done", "err", err)
		}
	case actNak:
		if err := msg.Nak(); err != nil {
			log.Warn("hand back job; it returns when its lease ends", "err", err)
		}
	case actLeave:
		log.Info("job left to the worker that took it over")
	}
}

// record counts the job's outcome and audits it.
func (w *Worker) record(log *slog.Logger, msg jetstream.Msg, job schemas.Job, act action, code schemas.Code, usage *schemas.Usage, t *schemas.Timings) {
	outcome := outcomeCompleted
	switch {
	case act == actNak:
		outcome = outcomeRequeued
	case act == actLeave:
		outcome = outcomeTakenOver
	case code != "":
		outcome = string(code)
	}
	w.metrics.jobs.WithLabelValues(outcome).Inc()
	w.audit(msg, schemas.AuditEvent{JobID: job.ID, Principal: job.Principal, Outcome: outcome, Usage: usage, Timings: t})
}

// audit records a job.finished event, with the job's principal, in the
// worker's chain of the audit trail. The auditor publishes it apart from
// the job: auditing must not hold up jobs.
func (w *Worker) audit(msg jetstream.Msg, ev schemas.AuditEvent) {
	ev.Type, ev.Time = schemas.AuditJobFinished, time.Now().UTC()
	ev.WorkerID, ev.HiveID, ev.Model = w.cfg.ID, w.cfg.HiveID, w.cfg.Model
	if meta, err := msg.Metadata(); err == nil {
		ev.Delivery = int(meta.NumDelivered)
	}
	w.auditor.Record(ev)
}

// principalOf reads the principal of a job message that is not decoded as
// a job (handed back unread, or not a valid job), for its audit event.
func principalOf(msg jetstream.Msg) string {
	var job struct {
		Principal string `json:"principal"`
	}
	_ = json.Unmarshal(msg.Data(), &job)
	return job.Principal
}

// keepLease renews msg's lease every AckWait/3 until ctx is done. The
// server restarts the lease when it takes a renewal, which is before its
// answer arrives, so the lease lapses at the latest AckWait after the last
// answer: a renewal may wait for its answer until then, and when none came
// by then the job may be running elsewhere and is stopped.
func (w *Worker) keepLease(ctx context.Context, log *slog.Logger, msg jetstream.Msg, stop context.CancelCauseFunc) {
	ackWait := w.lease()
	t := time.NewTicker(ackWait / 3)
	defer t.Stop()
	lapses := time.Now().Add(ackWait)
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
			lapses = time.Now().Add(ackWait)
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
func request(job schemas.Job) (infer.Request, error) {
	g, err := CompileResponseFormat(job.ResponseFormat)
	if err != nil {
		return infer.Request{}, err
	}
	req := infer.Request{Prompt: job.Prompt, MaxTokens: job.MaxTokens, Stop: job.Stop, Sampling: params(job.Sampling), Grammar: g}
	if job.Logprobs != nil {
		req.Logprobs, req.TopLogprobs = true, *job.Logprobs
	}
	for _, m := range job.Messages {
		cm := chat.Message{Role: m.Role, Content: m.Content, Name: m.Name, ToolCallID: m.ToolCallID}
		for _, c := range m.ToolCalls {
			cm.ToolCalls = append(cm.ToolCalls, chat.ToolCall{ID: c.ID, Name: c.Name, Arguments: c.Arguments})
		}
		req.Messages = append(req.Messages, cm)
	}
	return req, nil
}

// CompileResponseFormat compiles a response format into the grammar that
// constrains sampling (nil for none or "text"). A schema rbee cannot honour
// fails with unsupported_schema naming the keyword, a malformed one with
// invalid_request.
func CompileResponseFormat(f *schemas.ResponseFormat) (*grammar.Grammar, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if f == nil || f.Type == schemas.FormatText {
		return nil, nil
	}
	if f.Type == schemas.FormatJSONObject {
		return grammar.JSONObject(), nil
	}
	g, err := grammar.FromJSONSchema(f.JSONSchema.Schema)
	switch {
	case errors.Is(err, grammar.ErrUnsupported):
		return nil, schemas.Wrap(schemas.CodeUnsupportedSchema, fmt.Errorf("response_format.json_schema %q: %w", f.JSONSchema.Name, err))
	case err != nil:
		return nil, schemas.Wrap(schemas.CodeInvalidRequest, fmt.Errorf("response_format.json_schema %q: %w", f.JSONSchema.Name, err))
	}
	return g, nil
}

// CheckResponseFormat reports whether a worker can honour f: the check the
// queen runs before queueing a job.
func CheckResponseFormat(f *schemas.ResponseFormat) error {
	_, err := CompileResponseFormat(f)
	return err
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
		LogitBias:        logitBias(s.LogitBias),
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
