package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

func greedy() schemas.Sampling {
	zero := 0.0
	return schemas.Sampling{Temperature: &zero}
}

// longJob runs until cancelled, as far as a test is concerned: thousands
// of tokens into a large context.
func longJob(id string) schemas.Job {
	return schemas.Job{ID: id, Prompt: "Once upon a time", MaxTokens: 10000, Sampling: greedy()}
}

// longContext makes room for longJob.
const longContext = 4096

func TestGreedyJobStreamsReferenceCompletion(t *testing.T) {
	b := newBed(t)
	var ref struct {
		CompletionText string  `json:"completion_text"`
		PromptIDs      []int32 `json:"prompt_ids"`
		GeneratedIDs   []int32 `json:"generated_ids"`
	}
	data, err := os.ReadFile("../infer/testdata/reference/stories260K-once-upon-a-time-64.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	r := b.startWorker(t, worker.Config{})
	sub := b.submit(t, schemas.Job{ID: "job-1", Prompt: "Once upon a time", MaxTokens: 64, Sampling: greedy()})
	events := drain(t, sub)

	var ids []int32
	for _, ev := range events[:len(events)-1] {
		if ev.JobID != "job-1" || ev.WorkerID != "w1" {
			t.Fatalf("event %d names job %q and worker %q", ev.Seq, ev.JobID, ev.WorkerID)
		}
		if *ev.TokenID >= 0 {
			ids = append(ids, *ev.TokenID)
		}
	}
	if got := text(events); got != ref.CompletionText {
		t.Errorf("text:\n%q\nwant:\n%q", got, ref.CompletionText)
	}
	if len(ids) != len(ref.GeneratedIDs) {
		t.Fatalf("%d token IDs, want %d", len(ids), len(ref.GeneratedIDs))
	}
	for i := range ids {
		if ids[i] != ref.GeneratedIDs[i] {
			t.Fatalf("token %d is %d, want %d", i, ids[i], ref.GeneratedIDs[i])
		}
	}
	end := events[len(events)-1]
	if end.Type != schemas.EventEnd || end.StopReason != schemas.StopReasonLength {
		t.Fatalf("last event %+v, want end with stop_reason length", end)
	}
	want := schemas.Usage{PromptTokens: len(ref.PromptIDs), CompletionTokens: 64, TotalTokens: len(ref.PromptIDs) + 64}
	if *end.Usage != want {
		t.Errorf("usage %+v, want %+v", *end.Usage, want)
	}
	if tm := end.Timings; tm == nil || tm.TotalMillis <= 0 || tm.TimeToFirstMillis <= 0 || tm.DecodeTokensPerSec <= 0 || tm.QueueMillis < 0 {
		t.Errorf("timings %+v: want positive times and rates", tm)
	}
	info := b.waitQueueEmpty(t)
	if info.NumRedelivered != 0 {
		t.Errorf("%d jobs redelivered", info.NumRedelivered)
	}
	if got := metric(t, r, "rbee_worker_tokens_generated_total"); got != 64 {
		t.Errorf("tokens generated metric %v, want 64", got)
	}
}

// metric reads a counter's or gauge's value, or a histogram's sample
// count, from the worker's registry; labels are name, value pairs. A metric
// not yet created reads 0.
func metric(t *testing.T, r *running, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return 0
}

// cancelJob puts the job's key in the cancels bucket, as the queen does.
func cancelJob(t *testing.T, b *bed, id string) {
	t.Helper()
	kv, err := b.js.KeyValue(testContext(t), b.subj.CancelsBucket())
	if err != nil {
		t.Fatalf("cancels bucket: %v", err)
	}
	if _, err := kv.Put(testContext(t), id, []byte("test")); err != nil {
		t.Fatalf("cancel %s: %v", id, err)
	}
}

// quickJob finishes in a few milliseconds.
func quickJob(id string) schemas.Job {
	return schemas.Job{ID: id, Prompt: "Once upon a time", MaxTokens: 8, Sampling: greedy()}
}

func wantEnd(t *testing.T, events []schemas.Event) schemas.Event {
	t.Helper()
	last := events[len(events)-1]
	if last.Type != schemas.EventEnd {
		t.Fatalf("last event %+v (error %+v), want an end event", last, last.Error)
	}
	return last
}

func TestTwoSlotsRunJobsConcurrently(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{Slots: 2, ContextLength: longContext, HeartbeatInterval: 20 * time.Millisecond})
	subA := b.submit(t, longJob("job-a"))
	firstA := firstToken(t, subA)
	subB := b.submit(t, longJob("job-b"))
	firstB := firstToken(t, subB)

	// Both are streaming now, and stay so until cancelled.
	b.waitState(t, "w1", func(hb schemas.WorkerHeartbeat) error {
		if hb.Busy != 2 {
			return fmt.Errorf("busy %d of %d slots, want 2", hb.Busy, hb.Slots)
		}
		return nil
	})
	if got := metric(t, r, "rbee_worker_busy_slots"); got != 2 {
		t.Errorf("busy slots metric %v, want 2", got)
	}
	cancelJob(t, b, "job-a")
	cancelJob(t, b, "job-b")
	wantError(t, drain(t, subA, firstA), schemas.CodeCancelled)
	wantError(t, drain(t, subB, firstB), schemas.CodeCancelled)

	b.waitState(t, "w1", func(hb schemas.WorkerHeartbeat) error {
		if hb.Busy != 0 {
			return fmt.Errorf("busy %d, want 0", hb.Busy)
		}
		return nil
	})
	b.waitQueueEmpty(t)
	checkFor(t, waitLong, func() error {
		if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "cancelled"); got != 2 {
			return fmt.Errorf("cancelled jobs metric %v, want 2", got)
		}
		return nil
	})
}

func TestInvalidJobsAreTerminated(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{})

	bad := b.submit(t, schemas.Job{ID: "bad-1", Prompt: "x", MaxTokens: -1})
	events := drain(t, bad)
	wantError(t, events, schemas.CodeInvalidRequest)
	if len(events) != 1 || events[0].JobID != "bad-1" {
		t.Errorf("events %+v, want one error event for bad-1", events)
	}

	other := b.submit(t, schemas.Job{ID: "other-1", Model: "other-model", Prompt: "x"})
	wantError(t, drain(t, other), schemas.CodeModelNotFound)

	// Not JSON: there is no reply subject to answer on.
	b.submitRaw(t, "garbage-1", []byte("{not json"))
	checkFor(t, waitLong, func() error {
		if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "invalid_request"); got != 2 {
			return fmt.Errorf("invalid_request jobs metric %v, want 2", got)
		}
		return nil
	})
	if info := b.waitQueueEmpty(t); info.NumRedelivered != 0 {
		t.Errorf("%d jobs redelivered", info.NumRedelivered)
	}
	// Each is kept, as it was queued, with why.
	dead, err := bus.ReadDeadLetters(testContext(t), b.js, b.subj, modelName, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]schemas.Code{"bad-1": schemas.CodeInvalidRequest, "other-1": schemas.CodeModelNotFound, "garbage-1": schemas.CodeInvalidRequest}
	if len(dead) != len(want) {
		t.Fatalf("%d dead letters, want %d: %+v", len(dead), len(want), dead)
	}
	for _, d := range dead {
		if d.Code != want[d.JobID] || d.Worker != "w1" || d.Deliveries != 1 || d.Subject != b.subj.Jobs(modelName) || d.Reason == "" {
			t.Errorf("dead letter %+v", d)
		}
	}
	if garbage := dead[2]; string(garbage.Data) != "{not json" {
		t.Errorf("dead letter of garbage-1 holds %q, want the bytes queued", garbage.Data)
	}

	// Poison jobs do not stop the worker.
	wantEnd(t, drain(t, b.submit(t, quickJob("good-1"))))
}

// A job delivered as often as the consumer allows without ending (its
// holders died on it) is dead-lettered by the next worker, not run again,
// and its stream ends with an error.
func TestExhaustedJobIsDeadLettered(t *testing.T) {
	b := newBed(t)
	ctx := testContext(t)
	const lease = 300 * time.Millisecond
	cons, err := bus.EnsureJobsConsumer(ctx, b.js, b.subj, modelName, lease, 2)
	if err != nil {
		t.Fatal(err)
	}
	sub := b.submit(t, quickJob("poison-1"))
	// The first holder takes the job and dies with it: no ack, no events.
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(waitLong))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	if batch.Error() != nil {
		t.Fatal(batch.Error())
	}
	r := b.startWorker(t, worker.Config{})
	events := drain(t, sub)
	wantError(t, events, schemas.CodeDeadLettered)
	if len(events) != 1 || events[0].WorkerID != "w1" || events[0].Delivery != 2 || events[0].Error.Retryable {
		t.Errorf("events %+v, want one final error from w1's delivery 2", events)
	}
	if got := metric(t, r, "rbee_worker_tokens_generated_total"); got != 0 {
		t.Errorf("%v tokens generated for a dead-lettered job", got)
	}
	b.waitQueueEmpty(t)
	dead, err := bus.ReadDeadLetters(ctx, b.js, b.subj, "", 0)
	if err != nil || len(dead) != 1 || dead[0].JobID != "poison-1" || dead[0].Code != schemas.CodeDeadLettered || dead[0].Deliveries != 2 {
		t.Fatalf("dead letters %+v, %v", dead, err)
	}
	var job schemas.Job
	if err := json.Unmarshal(dead[0].Data, &job); err != nil || job.ID != "poison-1" {
		t.Errorf("dead letter holds %q: %v", dead[0].Data, err)
	}
	// The next job runs.
	wantEnd(t, drain(t, b.submit(t, quickJob("after-poison"))))
}

// A job whose deadline passed while it was queued is answered, not run.
func TestExpiredJobIsNotRun(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{})
	job := quickJob("expired-1")
	job.Deadline = time.Now().Add(-time.Second)
	events := drain(t, b.submit(t, job))
	wantError(t, events, schemas.CodeDeadlineExceeded)
	if len(events) != 1 {
		t.Errorf("%d events, want only the error", len(events))
	}
	if got := metric(t, r, "rbee_worker_tokens_generated_total"); got != 0 {
		t.Errorf("%v tokens generated for an expired job", got)
	}
	b.waitQueueEmpty(t)

	job = quickJob("fresh-1")
	job.Deadline = time.Now().Add(time.Hour)
	wantEnd(t, drain(t, b.submit(t, job)))
}

// A job whose deadline passes while it runs stops there, with an error event.
func TestDeadlineStopsRunningJob(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{ContextLength: longContext})
	job := longJob("late-1")
	job.Deadline = time.Now().Add(300 * time.Millisecond)
	events := drain(t, b.submit(t, job))
	wantError(t, events, schemas.CodeDeadlineExceeded)
	if len(events) < 2 {
		t.Errorf("%d events: the job stopped before it streamed", len(events))
	}
	b.waitQueueEmpty(t)
}

// A job cancelled while it waits in the queue never starts.
func TestCancelledQueuedJobNeverStarts(t *testing.T) {
	b := newBed(t)
	cancelJob(t, b, "gone-1")
	sub := b.submit(t, longJob("gone-1"))
	r := b.startWorker(t, worker.Config{ContextLength: longContext})
	events := drain(t, sub)
	wantError(t, events, schemas.CodeCancelled)
	if len(events) != 1 {
		t.Errorf("%d events, want only the error", len(events))
	}
	if got := metric(t, r, "rbee_worker_tokens_generated_total"); got != 0 {
		t.Errorf("%v tokens generated for a cancelled job", got)
	}
	b.waitQueueEmpty(t)
}

// A job cancelled while it waits behind a busy worker never starts: the
// worker saw the cancel go by, and reads no key for it.
func TestJobCancelledWhileQueuedBehindARunningOneNeverStarts(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{Slots: 1, ContextLength: longContext})
	running := b.submit(t, longJob("busy-1"))
	first := firstToken(t, running)
	queued := b.submit(t, longJob("waits-1"))
	cancelJob(t, b, "waits-1")
	cancelJob(t, b, "busy-1")
	wantError(t, drain(t, running, first), schemas.CodeCancelled)
	events := drain(t, queued)
	wantError(t, events, schemas.CodeCancelled)
	if len(events) != 1 {
		t.Errorf("%d events for the job cancelled while queued, want only the error", len(events))
	}
	checkFor(t, waitLong, func() error {
		if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "cancelled"); got != 2 {
			return fmt.Errorf("cancelled jobs metric %v, want 2", got)
		}
		return nil
	})
}

// A job's last token travels with its end event: a 1-token job costs one
// message on the events stream, not two.
func TestLastTokenTravelsWithTheEnd(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{})
	job := quickJob("one-token")
	job.MaxTokens = 1
	events := drain(t, b.submit(t, job))
	wantEnd(t, events)
	if len(events) != 2 || events[0].Type != schemas.EventToken {
		t.Fatalf("events %+v, want a token and the end", events)
	}
	ctx := testContext(t)
	stream, err := b.js.Stream(ctx, b.subj.StreamsStream())
	if err != nil {
		t.Fatal(err)
	}
	subject := b.subj.JobEvents(testOwner, job.ID)
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	if n := info.State.Subjects[subject]; n != 1 {
		t.Errorf("the 1-token job's events took %d messages, want 1", n)
	}
}

// Every settled job leaves an audit event in the events stream.
func TestJobsLeaveAuditEvents(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{HiveID: "h1"})
	wantEnd(t, drain(t, b.submit(t, quickJob("audited-1"))))
	wantError(t, drain(t, b.submit(t, schemas.Job{ID: "audited-2", Prompt: "x", MaxTokens: -1})), schemas.CodeInvalidRequest)

	ctx := testContext(t)
	stream, err := b.js.Stream(ctx, b.subj.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]schemas.AuditEvent{}
	checkFor(t, waitLong, func() error {
		for seq := uint64(1); seq <= 2; seq++ {
			m, err := stream.GetMsg(ctx, seq)
			if err != nil {
				return err
			}
			var ev schemas.AuditEvent
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				return err
			}
			if err := ev.Validate(); err != nil {
				return err
			}
			if m.Subject != b.subj.Audit("worker", ev.WorkerID, schemas.AuditJobFinished) {
				return fmt.Errorf("audit event on %q", m.Subject)
			}
			got[ev.JobID] = ev
		}
		return nil
	})
	done := got["audited-1"]
	if done.Outcome != schemas.OutcomeCompleted || done.HiveID != "h1" || done.Delivery != 1 ||
		done.Usage == nil || done.Usage.CompletionTokens != 8 || done.Timings == nil {
		t.Errorf("completed job's event %+v", done)
	}
	if bad := got["audited-2"]; bad.Outcome != string(schemas.CodeInvalidRequest) {
		t.Errorf("rejected job's event %+v", bad)
	}
}

// A deleted jobs consumer is made anew, and jobs flow again.
func TestWorkerRecreatesDeletedConsumer(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{})
	ctx := testContext(t)
	name := b.subj.JobsConsumer(modelName)
	if err := b.js.DeleteConsumer(ctx, b.subj.JobsStream(), name); err != nil {
		t.Fatal(err)
	}
	checkFor(t, waitLong, func() error {
		_, err := b.js.Consumer(ctx, b.subj.JobsStream(), name)
		return err
	})
	wantEnd(t, drain(t, b.submit(t, quickJob("after-delete"))))
}

func TestCancelStopsJobAndFreesSlot(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{ContextLength: longContext})
	sub := b.submit(t, longJob("job-c"))
	first := firstToken(t, sub)
	cancelJob(t, b, "job-c")
	events := drain(t, sub, first)
	wantError(t, events, schemas.CodeCancelled)

	wantEnd(t, drain(t, b.submit(t, quickJob("job-d"))))
	b.waitQueueEmpty(t)
	if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "cancelled"); got != 1 {
		t.Errorf("cancelled jobs metric %v, want 1", got)
	}
	if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "completed"); got != 1 {
		t.Errorf("completed jobs metric %v, want 1", got)
	}
}

// heartbeats reads published heartbeats until one has state want.
func heartbeats(t *testing.T, sub *nats.Subscription, want string) []schemas.WorkerHeartbeat {
	t.Helper()
	var out []schemas.WorkerHeartbeat
	for {
		msg, err := sub.NextMsg(waitLong)
		if err != nil {
			t.Fatalf("waiting for a %s heartbeat: %v", want, err)
		}
		var hb schemas.WorkerHeartbeat
		if err := json.Unmarshal(msg.Data, &hb); err != nil {
			t.Fatalf("decode heartbeat: %v", err)
		}
		if err := hb.Validate(); err != nil {
			t.Fatalf("heartbeat: %v", err)
		}
		out = append(out, hb)
		if hb.State == want {
			return out
		}
	}
}

func TestHeartbeatLifecycle(t *testing.T) {
	b := newBed(t)
	hbs, err := b.nc.SubscribeSync(b.subj.Heartbeat(schemas.KindWorker, "w-hb"))
	if err != nil {
		t.Fatal(err)
	}
	r := b.startWorker(t, worker.Config{ID: "w-hb", HiveID: "hive-1", Slots: 2, ContextLength: 256, HeartbeatInterval: 20 * time.Millisecond})
	hb := b.waitState(t, "w-hb", func(hb schemas.WorkerHeartbeat) error { return nil })
	want := schemas.WorkerHeartbeat{WorkerID: "w-hb", HiveID: "hive-1", Model: modelName, State: schemas.WorkerReady,
		Slots: 2, Busy: 0, PID: os.Getpid(), Context: 256, Time: hb.Time}
	if hb != want || hb.Time.IsZero() {
		t.Errorf("heartbeat %+v, want %+v", hb, want)
	}
	heartbeats(t, hbs, schemas.WorkerReady)

	r.wait(t)
	for _, hb := range heartbeats(t, hbs, schemas.WorkerDraining) {
		if hb.State == schemas.WorkerStarting {
			t.Errorf("a starting heartbeat after ready")
		}
	}
	// Later heartbeats, still in flight, may only repeat the drain.
	for {
		msg, err := hbs.NextMsg(100 * time.Millisecond)
		if err != nil {
			break
		}
		if !strings.Contains(string(msg.Data), `"state":"draining"`) {
			t.Errorf("heartbeat after draining: %s", msg.Data)
		}
	}
	if _, err := b.kv.Get(testContext(t), "w-hb"); !isKeyGone(err) {
		t.Errorf("heartbeat key after Run returned: %v, want it gone", err)
	}
}

func TestShutdownFinishesJobInHand(t *testing.T) {
	b := newBed(t)
	hbs, err := b.nc.SubscribeSync(b.subj.Heartbeat(schemas.KindWorker, "w1"))
	if err != nil {
		t.Fatal(err)
	}
	r := b.startWorker(t, worker.Config{ContextLength: longContext, ShutdownGrace: waitLong})
	const n = 200
	sub := b.submit(t, schemas.Job{ID: "job-s", Prompt: "Once upon a time", MaxTokens: n, Sampling: greedy()})
	first := firstToken(t, sub)
	r.wait(t)

	beats := heartbeats(t, hbs, schemas.WorkerDraining)
	if draining := beats[len(beats)-1]; draining.Busy != 1 {
		t.Errorf("draining with %d busy slots, want the job in hand", draining.Busy)
	}
	end := wantEnd(t, drain(t, sub, first))
	if end.Usage.CompletionTokens != n {
		t.Errorf("%d tokens, want %d", end.Usage.CompletionTokens, n)
	}
	b.waitQueueEmpty(t)
}

// A worker stopped mid-stream hands the job back, and the next worker goes
// on from the last token sent: the reader sees one unbroken stream, the
// same as a run that was never interrupted.
func TestShutdownMidStreamResumesOnAnotherWorker(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{ContextLength: longContext, ShutdownGrace: time.Millisecond})
	const n = 300
	job := schemas.Job{ID: "job-g", Prompt: "Once upon a time", MaxTokens: n, Sampling: greedy()}
	sub := b.submit(t, job)
	first := firstToken(t, sub)
	r.wait(t)
	if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "requeued"); got != 1 {
		t.Errorf("requeued jobs metric %v, want 1", got)
	}
	b.startWorker(t, worker.Config{ID: "w2", ContextLength: longContext})
	events := drain(t, sub, first)
	end := wantEnd(t, events)
	if end.WorkerID != "w2" || end.Delivery != 2 || end.Usage.CompletionTokens != n {
		t.Errorf("end event %+v, want %d tokens from w2's delivery 2", end, n)
	}
	var ids []int32
	for _, ev := range events[:len(events)-1] {
		if *ev.TokenID >= 0 {
			ids = append(ids, *ev.TokenID)
		}
	}
	solo := soloRun(t, job)
	if got := text(events); got != solo.Text || !slices.Equal(ids, solo.GeneratedIDs) {
		t.Errorf("resumed stream:\n%q\nuninterrupted run:\n%q", got, solo.Text)
	}
	b.waitQueueEmpty(t)
}

// soloRun is what the engine generates for job on its own.
func soloRun(t *testing.T, job schemas.Job) infer.Result {
	t.Helper()
	s, err := testModel.NewSession(longContext)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Generate(context.Background(), infer.Request{Prompt: job.Prompt, MaxTokens: job.MaxTokens,
		Sampling: sample.Params{Temperature: 0}}, func(infer.Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestLeaseRenewedWhileGenerating(t *testing.T) {
	b := newBed(t)
	// Long enough that a loaded machine's scheduling stalls do not let the
	// lease lapse.
	const ackWait = time.Second
	// A second slot would take the job if its lease lapsed.
	b.startWorker(t, worker.Config{Slots: 2, ContextLength: longContext, AckWait: ackWait})
	sub := b.submit(t, longJob("job-l"))
	events := []schemas.Event{firstToken(t, sub)}
	start := time.Now()
	for time.Since(start) < 5*ackWait/2 {
		ev := sub.next()
		if ev.Type != schemas.EventToken {
			t.Fatalf("job ended after %v: %+v", time.Since(start), ev)
		}
		events = append(events, ev)
	}
	cancelJob(t, b, "job-l")
	wantError(t, drain(t, sub, events...), schemas.CodeCancelled)
	if info := b.waitQueueEmpty(t); info.NumRedelivered != 0 {
		t.Errorf("%d jobs redelivered", info.NumRedelivered)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	b := newBed(t)
	for _, tc := range []struct {
		name string
		cfg  worker.Config
		want string
	}{
		{"no ID", worker.Config{Model: modelName}, "worker ID"},
		{"bad ID", worker.Config{ID: "a.b", Model: modelName}, "worker ID"},
		{"bad hive", worker.Config{ID: "w", HiveID: "h h", Model: modelName}, "hive ID"},
		{"bad model", worker.Config{ID: "w", Model: "a.b"}, "model"},
		{"negative slots", worker.Config{ID: "w", Model: modelName, Slots: -1}, "slots"},
		{"negative context", worker.Config{ID: "w", Model: modelName, ContextLength: -1}, "context length"},
		{"huge context", worker.Config{ID: "w", Model: modelName, ContextLength: 1 << 30}, "context"},
		{"negative ack wait", worker.Config{ID: "w", Model: modelName, AckWait: -1}, "ack wait"},
		{"tiny ack wait", worker.Config{ID: "w", Model: modelName, AckWait: time.Millisecond}, "ack wait"},
		{"bad max attempts", worker.Config{ID: "w", Model: modelName, MaxAttempts: -2}, "max attempts"},
		{"negative heartbeat", worker.Config{ID: "w", Model: modelName, HeartbeatInterval: -1}, "heartbeat"},
		{"negative grace", worker.Config{ID: "w", Model: modelName, ShutdownGrace: -1}, "shutdown grace"},
		{"bad prefix", worker.Config{ID: "w", Model: modelName, Subjects: schemas.Subjects{Prefix: "a.b"}}, "prefix"},
		{"bad metrics URL", worker.Config{ID: "w", Model: modelName, MetricsURL: "127.0.0.1:9"}, "metrics URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := worker.New(b.nc, testModel, tc.cfg, nil, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error about %q", err, tc.want)
			}
		})
	}
	if _, err := worker.New(nil, testModel, worker.Config{ID: "w", Model: modelName}, nil, nil); err == nil {
		t.Error("New without a connection: no error")
	}
}

func TestRunTwiceFails(t *testing.T) {
	b := newBed(t)
	nc, _ := bustest.Connect(t, b.srv)
	w, err := worker.New(nc, testModel, worker.Config{ID: "w2", Model: modelName, Subjects: b.subj}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := w.Run(ctx); err == nil {
		t.Error("Run with a done context started")
	}
	if err := w.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second Run: %v, want an error", err)
	}
}

func TestShutdownGraceRequeuesJobWithoutTokens(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{ContextLength: 1024, ShutdownGrace: time.Millisecond})
	// About 500 prompt tokens: the engine evaluates them for a while
	// before the first token.
	job := schemas.Job{ID: "job-n", Prompt: strings.Repeat("Once upon a time ", 125), MaxTokens: 1, Sampling: greedy()}
	sub := b.submit(t, job)
	checkFor(t, waitLong, func() error {
		if got := metric(t, r, "rbee_worker_busy_slots"); got != 1 {
			return fmt.Errorf("busy slots %v, want 1", got)
		}
		return nil
	})
	r.wait(t)
	if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "requeued"); got != 1 {
		t.Fatalf("requeued jobs metric %v, want 1", got)
	}
	if ev, ok := sub.tryNext(100 * time.Millisecond); ok {
		t.Fatalf("the client was told about the requeued job: %+v", ev)
	}

	// Another worker takes it up, and the client sees one clean stream.
	b.startWorker(t, worker.Config{ID: "w2", ContextLength: 1024})
	end := wantEnd(t, drain(t, sub))
	if end.WorkerID != "w2" || end.Usage.CompletionTokens != 1 {
		t.Errorf("end event %+v, want one token from w2", end)
	}
	b.waitQueueEmpty(t)
}

func TestJobsEndWithEngineErrors(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{ContextLength: 32})

	long := b.submit(t, schemas.Job{ID: "job-long", Prompt: strings.Repeat("Once upon a time ", 20), Sampling: greedy()})
	events := drain(t, long)
	wantError(t, events, schemas.CodeContextExceeded)

	// A chat job is rendered with the model's template (here the fallback).
	chat := b.submit(t, schemas.Job{ID: "job-chat", MaxTokens: 4, Sampling: greedy(),
		Messages: []schemas.Message{{Role: "user", Content: "Hi"}}})
	if end := wantEnd(t, drain(t, chat)); end.Usage.CompletionTokens == 0 {
		t.Errorf("chat job: %+v, want tokens", end.Usage)
	}
	b.waitQueueEmpty(t)
	if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "context_length_exceeded"); got != 1 {
		t.Errorf("context_length_exceeded jobs metric %v, want 1", got)
	}
}

// TestFourSlotsBatchEightJobs sends eight jobs at once to a worker that
// decodes four at a time: all complete, and each text is exactly what the
// engine writes for that prompt alone.
func TestFourSlotsBatchEightJobs(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{Slots: 4, ContextLength: 256})
	prompts := []string{"Once upon a time", "The cat", "Lily and Ben went", "One day, a big dog",
		"Tom had a red ball", "The sun was hot", "Mia liked to sing", "There was a little bird"}
	subs := make([]*events, len(prompts))
	for i, p := range prompts {
		subs[i] = b.submit(t, schemas.Job{ID: fmt.Sprintf("batch-%d", i), Prompt: p, MaxTokens: 40 + 10*i, Sampling: greedy()})
	}
	for i, p := range prompts {
		events := drain(t, subs[i])
		wantEnd(t, events)
		s, err := testModel.NewSession(256)
		if err != nil {
			t.Fatal(err)
		}
		solo, err := s.Generate(context.Background(), infer.Request{Prompt: p, MaxTokens: 40 + 10*i,
			Sampling: sample.Params{Temperature: 0}}, func(infer.Token) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		if got := text(events); got != solo.Text {
			t.Errorf("job %d (%q):\n%q\nalone:\n%q", i, p, got, solo.Text)
		}
	}
	b.waitQueueEmpty(t)
}

// ApplyConfig changes the heartbeat interval and the shutdown grace of a
// running worker, and refuses, applying nothing, a config that changes
// what needs a new process. The heartbeat tells where the metrics are.
func TestApplyConfigChangesLiveSettings(t *testing.T) {
	b := newBed(t)
	hbs, err := b.nc.SubscribeSync(b.subj.Heartbeat(schemas.KindWorker, "w-apply"))
	if err != nil {
		t.Fatal(err)
	}
	const metricsURL = "http://127.0.0.1:9/metrics"
	cfg := worker.Config{ID: "w-apply", ContextLength: 1024, HeartbeatInterval: time.Hour, ShutdownGrace: waitLong, MetricsURL: metricsURL}
	r := b.startWorker(t, cfg)
	if hb := heartbeats(t, hbs, schemas.WorkerReady); hb[len(hb)-1].MetricsURL != metricsURL {
		t.Errorf("heartbeat metrics_url %q, want %q", hb[len(hb)-1].MetricsURL, metricsURL)
	}
	cfg = r.cfg // with the model and subjects the test bed gave it

	refused := cfg
	refused.Slots, refused.HeartbeatInterval = 2, 10*time.Millisecond
	if err := r.w.ApplyConfig(refused); err == nil || !strings.Contains(err.Error(), "Slots") {
		t.Errorf("ApplyConfig of other slots: %v, want a refusal naming Slots", err)
	}
	bad := cfg
	bad.ShutdownGrace = -1
	if err := r.w.ApplyConfig(bad); err == nil {
		t.Error("ApplyConfig of a negative grace: no error")
	}

	// An hour between beats before: beats now come every 20 ms.
	live := cfg
	live.HeartbeatInterval, live.ShutdownGrace = 20*time.Millisecond, time.Millisecond
	live.Load = worker.LoadStats{Took: time.Second} // a report, not a setting
	if err := r.w.ApplyConfig(live); err != nil {
		t.Fatalf("ApplyConfig of live settings: %v", err)
	}
	for range 3 {
		if _, err := hbs.NextMsg(waitLong); err != nil {
			t.Fatalf("no heartbeat at the new interval: %v", err)
		}
	}

	// The new grace, not the first one's 30 s, ends the drain: the job in
	// hand goes back to the queue.
	job := schemas.Job{ID: "job-apply", Prompt: strings.Repeat("Once upon a time ", 125), MaxTokens: 1, Sampling: greedy()}
	b.submit(t, job)
	checkFor(t, waitLong, func() error {
		if got := metric(t, r, "rbee_worker_busy_slots"); got != 1 {
			return fmt.Errorf("busy slots %v, want 1", got)
		}
		return nil
	})
	r.wait(t)
	if got := metric(t, r, "rbee_worker_jobs_total", "outcome", "requeued"); got != 1 {
		t.Errorf("requeued jobs %v after a drain with a 1 ms grace, want 1", got)
	}
}
