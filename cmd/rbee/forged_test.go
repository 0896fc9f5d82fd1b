package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// forgedText is what the forger tries to put in an answer.
const forgedText = " FORGED-BY-ANOTHER-WORKER"

// forger holds the worker identity, which every worker shares, but none
// of the jobs' keys: it writes on job subjects with the right expected
// sequence, as the fence asks of anyone.
type forger struct {
	t    *testing.T
	js   jetstream.JetStream
	str  jetstream.Stream
	subj schemas.Subjects
}

func newForger(t *testing.T, up upInstance) *forger {
	t.Helper()
	js, err := jetstream.New(up.connect(t, bus.RoleWorker))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := schemas.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	str, err := js.Stream(ctx, subj.StreamsStream())
	if err != nil {
		t.Fatal(err)
	}
	return &forger{t: t, js: js, str: str, subj: subj}
}

// subject finds a job's events subject, whoever owns it.
func (f *forger) subject(jobID string) string {
	f.t.Helper()
	var subject string
	poll(f.t, 10*time.Second, func() error {
		info, err := f.str.Info(context.Background(), jetstream.WithSubjectFilter(f.subj.JobEventsAnyOwner(jobID)))
		if err != nil {
			return err
		}
		for s := range info.State.Subjects {
			subject = s
		}
		if subject == "" {
			return fmt.Errorf("job %s has no events yet", jobID)
		}
		return nil
	})
	return subject
}

// last is the subject's last message and its last event (none on an empty
// subject).
func (f *forger) last(subject string) (uint64, *schemas.Event) {
	f.t.Helper()
	msg, err := f.str.GetLastMsgForSubject(context.Background(), subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		f.t.Fatalf("last message of %s: %v", subject, err)
	}
	events, err := schemas.DecodeEvents(nil, msg.Data)
	if err != nil {
		f.t.Fatalf("last message of %s: %v", subject, err)
	}
	return msg.Sequence, &events[len(events)-1]
}

// append writes what next makes of the last event after the subject's
// last message, trying again while someone else appends first.
func (f *forger) append(subject string, next func(last *schemas.Event) schemas.Event) {
	f.t.Helper()
	poll(f.t, 10*time.Second, func() error {
		seq, last := f.last(subject)
		data, err := schemas.EncodeEvents([]schemas.Event{next(last)})
		if err != nil {
			f.t.Fatal(err)
		}
		_, err = f.js.Publish(context.Background(), subject, data, jetstream.WithExpectLastSequencePerSubject(seq))
		if err != nil && !bus.IsWrongLastSequence(err) {
			f.t.Fatalf("forge on %s: %v", subject, err)
		}
		return err
	})
}

// after numbers a forged event as the next one of the job's stream.
func after(jobID string, last *schemas.Event, ev schemas.Event) schemas.Event {
	ev.JobID, ev.Delivery = jobID, 1
	if last != nil {
		ev.Seq, ev.Delivery, ev.WorkerID = last.Seq+1, last.Delivery, last.WorkerID
	}
	return ev
}

func forgedTokenAfter(jobID string) func(*schemas.Event) schemas.Event {
	return func(last *schemas.Event) schemas.Event {
		id := int32(1)
		return after(jobID, last, schemas.Event{Type: schemas.EventToken, Text: forgedText, TokenID: &id})
	}
}

func forgedEndAfter(jobID string) func(*schemas.Event) schemas.Event {
	return func(last *schemas.Event) schemas.Event {
		return after(jobID, last, schemas.Event{Type: schemas.EventEnd, StopReason: schemas.StopReasonStop,
			Usage: &schemas.Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2}})
	}
}

// completion is an unattacked run's text, and its job's ID.
func completion(t *testing.T, up upInstance, body map[string]any) (string, string) {
	t.Helper()
	resp := postJSON(t, "http://"+up.httpAddr+"/v1/completions", body)
	defer resp.Body.Close()
	var out struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || len(out.Choices) != 1 {
		t.Fatalf("completion: %d %v %+v", resp.StatusCode, err, out)
	}
	return out.Choices[0].Text, resp.Header.Get("X-Rbee-Job-Id")
}

// The must-show, on rbee up with its NATS identities: a second
// connection with the worker identity appends a forged token and a forged
// end event to a running job, with the expected sequence read from the
// stream, and to a queued job before any worker takes it. The client's
// text is the unattacked run's, the forged text never reaches it, and the
// queen counts and audits what it ignored. A bus request's job carries
// the NATS identity that asked: nats:client.
func TestForgedEventsNeverReachAClient(t *testing.T) {
	up := startUp(t, "--ctx", "4096")
	f := newForger(t, up)
	js, err := jetstream.New(up.connect(t, bus.RoleOperator))
	if err != nil {
		t.Fatal(err)
	}
	long := map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0}
	want, refJob := completion(t, up, long)
	// The queen's ID: the owner of its jobs' subjects.
	owner, _, _ := strings.Cut(strings.TrimPrefix(f.subject(refJob), strings.TrimSuffix(f.subj.AllJobEvents(), ">")), ".")

	t.Run("running", func(t *testing.T) {
		long["stream"] = true
		resp := postJSON(t, "http://"+up.httpAddr+"/v1/completions", long)
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		r := &sseReader{t: t, resp: resp, sc: sc}
		jobID := resp.Header.Get("X-Rbee-Job-Id")
		got := r.readN(20)

		// Pause the job's worker, so that the forged events go in
		// between its own, as they would in a race it might win.
		pid := workerPID(t, js, resp.Header.Get("X-Rbee-Worker-Id"))
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
					t.Error(err)
				}
			}
		}
		defer resume()
		subject := f.subject(jobID)
		if _, last := f.last(subject); last == nil || last.Terminal() {
			t.Fatalf("the job's last event %+v: want it still running; make it longer", last)
		}
		f.append(subject, forgedTokenAfter(jobID))
		f.append(subject, forgedEndAfter(jobID))
		resume()

		got += r.rest()
		if got != want {
			t.Errorf("the attacked stream differs from an unattacked run (%d and %d bytes) %s", len(got), len(want), diverge(got, want))
		}
		if strings.Contains(got, forgedText) {
			t.Error("the forged text reached the client")
		}
		metrics := getBody(t, "http://"+up.httpAddr+"/metrics")
		if !strings.Contains(metrics, "\nrbee_queen_events_forged_total 2\n") {
			t.Errorf("rbee_queen_events_forged_total is not 2:\n%s", grepLines(metrics, "forged"))
		}
		waitAudit(t, js, func(ev schemas.AuditEvent) bool {
			return ev.Type == schemas.AuditEventForged && ev.Component == "queen" && ev.JobID == jobID
		})
	})

	t.Run("queued", func(t *testing.T) {
		const jobID = "forged-before-taken"
		short := map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 64, "temperature": 0}
		want, _ := completion(t, up, short)
		// Forged before the job is even queued: its subject is known.
		subject := f.subj.JobEvents(owner, jobID)
		f.append(subject, forgedTokenAfter(jobID))
		f.append(subject, forgedEndAfter(jobID))

		nc := up.connect(t, bus.RoleClient)
		short["id"] = jobID
		got := busInfer(t, nc, short)
		if got != want {
			t.Errorf("the attacked job's text %q, want the unattacked run's %q", got, want)
		}
		waitAudit(t, js, func(ev schemas.AuditEvent) bool {
			return ev.Type == schemas.AuditJobFinished && ev.JobID == jobID && ev.Outcome == schemas.OutcomeCompleted &&
				ev.Principal == "nats:client"
		})
	})
}

// busInfer asks rbee.v2.infer as nats req --wait-for-empty would and
// returns the text of the events relayed.
func busInfer(t *testing.T, nc *nats.Conn, req map[string]any) string {
	t.Helper()
	subj, _ := schemas.NewSubjects("")
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	body, _ := json.Marshal(req)
	if err := nc.PublishRequest(subj.Infer(), inbox, body); err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for {
		msg, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("infer: %v", err)
		}
		if len(msg.Data) == 0 {
			return text.String()
		}
		var ev schemas.Event
		if err := json.Unmarshal(msg.Data, &ev); err != nil {
			t.Fatalf("infer event %q: %v", msg.Data, err)
		}
		if ev.Type == schemas.EventError {
			t.Fatalf("infer: %v", ev.Error)
		}
		text.WriteString(ev.Text)
	}
}

// workerPID is the process of a worker, as its heartbeat says.
func workerPID(t *testing.T, js jetstream.JetStream, workerID string) int {
	t.Helper()
	subj, _ := schemas.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, subj.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, workerID)
	if err != nil {
		t.Fatalf("heartbeat of worker %q: %v", workerID, err)
	}
	var hb schemas.WorkerHeartbeat
	if err := json.Unmarshal(e.Value(), &hb); err != nil || hb.PID <= 1 {
		t.Fatalf("heartbeat of worker %q: PID %d, %v", workerID, hb.PID, err)
	}
	return hb.PID
}

// waitAudit reads the audit trail from its start until an event that ok
// accepts, within 30 s.
func waitAudit(t *testing.T, js jetstream.JetStream, ok func(schemas.AuditEvent) bool) {
	t.Helper()
	subj, _ := schemas.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, subj.EventsStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj.AllAudit()}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			t.Fatalf("no such audit event: %v", err)
		}
		if rec, err := bus.AuditRecordOf(msg); err == nil && ok(rec.Event) {
			return
		}
	}
}

func grepLines(text, word string) string {
	var out []string
	for l := range strings.SplitSeq(text, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
