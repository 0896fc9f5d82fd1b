package bus_test

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

func TestReadJobSummarizesItsEvents(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 10*time.Second)
	if _, err := bus.ReadJob(ctx, js, subj, "job-1"); !errors.Is(err, bus.ErrJobNotFound) {
		t.Fatalf("no events yet: %v, want ErrJobNotFound", err)
	}
	if _, err := bus.ReadJob(ctx, js, subj, "job.*"); schemas.CodeOf(err) != schemas.CodeInvalidRequest {
		t.Errorf("a wildcard ID: %v, want invalid_request", err)
	}
	tok := func(seq int, text string) schemas.Event {
		id := int32(seq)
		return schemas.Event{JobID: "job-1", Seq: seq, Type: schemas.EventToken, Delivery: 1, WorkerID: "w1", Text: text, TokenID: &id}
	}
	publish := func(subject string, events ...schemas.Event) {
		data, err := schemas.EncodeEvents(events)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	subject := subj.JobEvents("q1", "job-1")
	publish(subject, tok(0, "Once"), tok(1, " upon"))
	// Another job's events, and one whose ID job-1 is a prefix of, stay apart.
	publish(subj.JobEvents("q1", "job-10"), tok(0, "x"))
	st, err := bus.ReadJob(ctx, js, subj, "job-1")
	if err != nil || st.State != schemas.JobRunning || st.Text != "Once upon" || st.Owner != "q1" || st.Events != 2 {
		t.Fatalf("running: %+v, %v", st, err)
	}
	publish(subject, schemas.Event{JobID: "job-1", Seq: 2, Type: schemas.EventEnd, Delivery: 1, WorkerID: "w1",
		StopReason: schemas.StopReasonStop, Usage: &schemas.Usage{PromptTokens: 4, CompletionTokens: 2, TotalTokens: 6}})
	st, err = bus.ReadJob(ctx, js, subj, "job-1")
	if err != nil || st.State != schemas.JobDone || st.Tokens != 2 || st.Usage.TotalTokens != 6 || st.WorkerID != "w1" ||
		time.Since(st.Updated) > time.Minute {
		t.Errorf("done: %+v, %v", st, err)
	}
}
