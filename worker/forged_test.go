package worker_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

// stored is every message on a job's events subject, as the stream keeps
// them: the events of those its key signed, and how many it did not.
func (b *bed) stored(t *testing.T, job schemas.Job) (signed []schemas.Event, unsigned int) {
	t.Helper()
	signer, err := job.EventKey.EventSigner()
	if err != nil || signer == nil {
		t.Fatalf("the job's key: %v", err)
	}
	ctx := testContext(t)
	str, err := b.js.Stream(ctx, b.subj.StreamsStream())
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); ; {
		msg, err := str.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(job.Stream))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return signed, unsigned
		}
		if err != nil {
			t.Fatalf("read %s: %v", job.Stream, err)
		}
		seq = msg.Sequence + 1
		if !signer.Verify(msg.Subject, msg.Data, msg.Header.Get(schemas.HeaderEventMAC)) {
			unsigned++
			continue
		}
		if signed, err = schemas.DecodeEvents(signed, msg.Data); err != nil {
			t.Fatalf("message %d: %v", msg.Sequence, err)
		}
	}
}

// forge appends events to subject as a holder of the worker identity
// without the job's key would.
func (b *bed) forge(t *testing.T, subject string, events ...schemas.Event) {
	t.Helper()
	data, err := schemas.EncodeEvents(events)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := schemas.NewEventKey().EventSigner()
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(schemas.HeaderEventMAC, other.Sign(subject, data))
	if _, err := b.js.PublishMsg(testContext(t), msg); err != nil {
		t.Fatalf("forge: %v", err)
	}
}

func forgedEvents(jobID string, seq, delivery int) []schemas.Event {
	id := int32(9)
	return []schemas.Event{
		{JobID: jobID, Seq: seq, Type: schemas.EventToken, Delivery: delivery, Text: " FORGED", TokenID: &id},
		{JobID: jobID, Seq: seq + 1, Type: schemas.EventError, Delivery: delivery,
			Error: schemas.Errorf(schemas.CodeCancelled, "forged")},
	}
}

// checkGenuine checks that the signed events are the whole, unbroken
// answer to job, ending with the given worker's delivery.
func checkGenuine(t *testing.T, job schemas.Job, events []schemas.Event, workerID string, delivery int) {
	t.Helper()
	for i, ev := range events {
		if ev.Seq != i || ev.JobID != job.ID {
			t.Fatalf("signed event %d: seq %d of job %q", i, ev.Seq, ev.JobID)
		}
	}
	end := wantEnd(t, events)
	if end.WorkerID != workerID || end.Delivery != delivery {
		t.Errorf("end %+v, want it from %s's delivery %d", end, workerID, delivery)
	}
	var ids []int32
	for _, ev := range events[:len(events)-1] {
		if *ev.TokenID >= 0 {
			ids = append(ids, *ev.TokenID)
		}
	}
	solo := soloRun(t, job)
	if got := text(events); got != solo.Text || !slices.Equal(ids, solo.GeneratedIDs) {
		t.Errorf("signed events:\n%q\nthe job alone:\n%q", got, solo.Text)
	}
}

// Messages on a job's subject that its key did not sign, there before any
// worker took it (a token, and an error event of a later delivery that
// would fence or end it), are passed over: the worker appends after them
// and answers the job in full, every message signed.
func TestWorkerPassesOverForgedEventsOfAQueuedJob(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{ContextLength: longContext})
	job := schemas.Job{ID: "job-forged-queued", Model: modelName, Stream: b.subj.JobEvents(testOwner, "job-forged-queued"),
		Prompt: "Once upon a time", MaxTokens: 64, Sampling: greedy(), EventKey: schemas.NewEventKey()}
	b.forge(t, job.Stream, forgedEvents(job.ID, 0, 9)...)
	b.submit(t, job)
	b.waitQueueEmpty(t)
	signed, unsigned := b.stored(t, job)
	if unsigned != 1 {
		t.Errorf("%d unsigned messages, want the one forged", unsigned)
	}
	checkGenuine(t, job, signed, "w1", 1)
}

// A worker taking a job over reads past forged messages and a signed
// message stored twice (copied by someone who may read job streams), and
// goes on exactly where the first worker stopped.
func TestTakeoverPassesOverForgedEvents(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{ContextLength: longContext, ShutdownGrace: time.Millisecond})
	job := schemas.Job{ID: "job-forged-takeover", Model: modelName, Prompt: "Once upon a time", MaxTokens: 300,
		Sampling: greedy(), EventKey: schemas.NewEventKey()}
	firstToken(t, b.submit(t, job))
	job.Stream = b.subj.JobEvents(testOwner, job.ID)
	r.wait(t)

	str, err := b.js.Stream(testContext(t), b.subj.StreamsStream())
	if err != nil {
		t.Fatal(err)
	}
	first, err := str.GetMsg(testContext(t), 1, jetstream.WithGetMsgSubject(job.Stream))
	if err != nil {
		t.Fatal(err)
	}
	signed, _ := b.stored(t, job)
	b.forge(t, job.Stream, forgedEvents(job.ID, len(signed), 2)...)
	replay := &nats.Msg{Subject: job.Stream, Data: first.Data, Header: nats.Header{}}
	replay.Header.Set(schemas.HeaderEventMAC, first.Header.Get(schemas.HeaderEventMAC))
	if _, err := b.js.PublishMsg(testContext(t), replay); err != nil {
		t.Fatal(err)
	}

	b.startWorker(t, worker.Config{ID: "w2", ContextLength: longContext})
	b.waitQueueEmpty(t)
	signed, unsigned := b.stored(t, job)
	if unsigned != 1 {
		t.Errorf("%d unsigned messages, want the one forged", unsigned)
	}
	// The replayed message is signed: drop its copy as the worker did.
	genuine := signed[:0:0]
	for _, ev := range signed {
		if ev.Seq >= len(genuine) {
			genuine = append(genuine, ev)
		}
	}
	if len(genuine) == len(signed) {
		t.Error("the replayed message is not in the stream")
	}
	checkGenuine(t, job, genuine, "w2", 2)
	if got := fmt.Sprint(genuine[0].Delivery, genuine[len(genuine)-1].Delivery); got != "1 2" {
		t.Errorf("deliveries of the first and last events %s, want 1 2: a takeover", got)
	}
}
