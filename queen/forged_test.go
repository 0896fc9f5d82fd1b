package queen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// forge publishes events on the job's subject as someone who has the
// worker identity but not the job's key would: unsigned, or signed with a
// key of its own.
func forge(t *testing.T, js jetstream.JetStream, subject string, signer *schemas.EventSigner, events ...schemas.Event) {
	t.Helper()
	data, err := schemas.EncodeEvents(events)
	if err != nil {
		t.Error(err)
		return
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	if signer != nil {
		msg.Header.Set(schemas.HeaderEventMAC, signer.Sign(subject, data))
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Errorf("forge: %v", err)
	}
}

func forgedToken(job schemas.Job, seq int, text string) schemas.Event {
	id := int32(7)
	return schemas.Event{JobID: job.ID, Seq: seq, Type: schemas.EventToken, Delivery: 1, WorkerID: "fake-worker", Text: text, TokenID: &id}
}

// The queen relays only what the job's key signed: a forged token and a
// forged end event between the worker's own, with the next seq, are
// counted, audited once, and never reach the client.
func TestForgedEventsAreNeverRelayed(t *testing.T) {
	f := newFixture(t, nil)
	f.run()
	otherKey, _ := schemas.NewEventKey().EventSigner()
	taken := f.startWorker(model, func(j *fakeJob) {
		j.token("Once")
		forge(t, f.js, j.Job.Stream, nil, forgedToken(j.Job, 1, " FORGED"))
		end := schemas.Event{JobID: j.Job.ID, Seq: 1, Type: schemas.EventEnd, Delivery: 1, StopReason: schemas.StopReasonStop,
			Usage: &schemas.Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2}}
		forge(t, f.js, j.Job.Stream, otherKey, forgedToken(j.Job, 1, " FORGED"), end)
		j.token(" upon")
		j.token(" a time")
		j.end(schemas.StopReasonStop, schemas.Usage{PromptTokens: 5, CompletionTokens: 3, TotalTokens: 8})
	})
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"x","max_tokens":8}`)
	job := recvJob(t, taken).Job
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	choice := body["choices"].([]any)[0].(map[string]any)
	if choice["text"] != "Once upon a time" || choice["finish_reason"] != "stop" {
		t.Errorf("choice %v, want the worker's own text and end", choice)
	}
	wantMetric(t, f.scrape(), "rbee_queen_events_forged_total 2")

	var forged []string
	checkFor(t, func() error {
		forged = forged[:0]
		err := bus.AuditRecords(f.ctx(), f.js, f.subj, time.Time{}, func(rec bus.AuditRecord) error {
			if ev := rec.Event; ev.Type == schemas.AuditEventForged {
				forged = append(forged, ev.JobID)
			}
			if strings.Contains(string(rec.Body), string(job.EventKey)) {
				t.Errorf("an audit event holds the job's key: %s", rec.Body)
			}
			return nil
		})
		if err == nil && len(forged) == 0 {
			err = errors.New("no event.forged audit event yet")
		}
		return err
	})
	if len(forged) != 1 || forged[0] != job.ID {
		t.Errorf("event.forged audited for %q, want once for %s", forged, job.ID)
	}
}

// A forged message last on the subject does not keep the queen from ending
// a job it stops following: its terminal event goes after the forged one,
// signed, as a worker taking the job over needs to see it.
func TestQueenEndsAStreamAfterAForgedMessage(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	f.run()
	taken := f.startWorker(model, func(j *fakeJob) {
		j.token("Once")
		forge(t, f.js, j.Job.Stream, nil, forgedToken(j.Job, 1, " FORGED"))
	}) // then silence: the queen gives up on the job
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"x","max_tokens":8}`)
	if code := body["error"].(map[string]any)["code"]; resp.StatusCode != 504 || code != string(schemas.CodeTimeout) {
		t.Fatalf("status %d, code %v: want 504 timeout", resp.StatusCode, code)
	}
	job := recvJob(t, taken).Job
	signer, _ := job.EventKey.EventSigner()
	checkFor(t, func() error {
		str, err := f.js.Stream(f.ctx(), f.subj.StreamsStream())
		if err != nil {
			return err
		}
		last, err := str.GetLastMsgForSubject(f.ctx(), job.Stream)
		if err != nil {
			return err
		}
		if !signer.Verify(last.Subject, last.Data, last.Header.Get(schemas.HeaderEventMAC)) {
			return fmt.Errorf("the last message %d is not signed with the job's key: %s", last.Sequence, last.Data)
		}
		events, err := schemas.DecodeEvents(nil, last.Data)
		if err != nil {
			return err
		}
		if ev := events[0]; ev.Type != schemas.EventError || ev.Error.Code != schemas.CodeTimeout || ev.Seq != 1 {
			return fmt.Errorf("the last event %+v, want the queen's timeout error at seq 1", ev)
		}
		return nil
	})
}
