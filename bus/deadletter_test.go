package bus_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

func TestDeadLettersKeepTheJobAndWhy(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 30*time.Second)
	if got, err := bus.ReadDeadLetters(ctx, js, subj, "", 0); err != nil || len(got) != 0 {
		t.Fatalf("empty stream: %v, %v", got, err)
	}
	var sent []bus.DeadLetter
	for i, model := range []string{"a", "b", "a", "a"} {
		d := bus.DeadLetter{
			JobID: fmt.Sprintf("job-%d", i), Subject: subj.Jobs(model),
			// Unreadable bytes are kept as they were.
			Data: []byte(fmt.Sprintf("{\"id\":\"job-%d\"\x00\xff", i)),
			Code: schemas.CodeDeadLettered, Reason: "delivered 3 times", Deliveries: 4, Worker: "w1",
		}
		if err := bus.PublishDeadLetter(ctx, js, subj, d); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, d)
	}
	// A repeat of a job's dead letter, as after a lost ack, is one copy.
	if err := bus.PublishDeadLetter(ctx, js, subj, sent[0]); err != nil {
		t.Fatal(err)
	}

	all, err := bus.ReadDeadLetters(ctx, js, subj, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != len(sent) {
		t.Fatalf("read %d dead letters, want %d", len(all), len(sent))
	}
	for i, got := range all {
		want := sent[i]
		if got.JobID != want.JobID || got.Subject != want.Subject || !bytes.Equal(got.Data, want.Data) ||
			got.Code != want.Code || got.Reason != want.Reason || got.Deliveries != want.Deliveries ||
			got.Worker != want.Worker || got.Seq == 0 || got.Time.IsZero() {
			t.Errorf("dead letter %d: %+v, want %+v", i, got, want)
		}
	}
	onlyA, err := bus.ReadDeadLetters(ctx, js, subj, "a", 0)
	if err != nil || len(onlyA) != 3 || onlyA[1].JobID != "job-2" {
		t.Errorf("model a: %+v, %v", onlyA, err)
	}
	newest, err := bus.ReadDeadLetters(ctx, js, subj, "a", 2)
	if err != nil || len(newest) != 2 || newest[0].JobID != "job-2" || newest[1].JobID != "job-3" {
		t.Errorf("newest 2 of model a: %+v, %v", newest, err)
	}
	if none, err := bus.ReadDeadLetters(ctx, js, subj, "c", 0); err != nil || len(none) != 0 {
		t.Errorf("model c: %+v, %v", none, err)
	}
	if err := bus.PublishDeadLetter(ctx, js, subj, bus.DeadLetter{Subject: "elsewhere.x"}); err == nil {
		t.Error("a dead letter from a subject that is not a jobs subject was stored")
	}
}
