package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/schemas"
)

// failoverBed is a queen and two worker processes of the bundled model on
// an embedded JetStream server, with a short lease so a lost worker's job
// moves on within seconds.
type failoverBed struct {
	js      jetstream.JetStream
	subj    schemas.Subjects
	base    string
	workers map[string]*exec.Cmd // by worker ID
}

const (
	failoverLease = 2 * time.Second
	failoverCtx   = 4096
)

func newFailoverBed(t *testing.T) *failoverBed {
	t.Helper()
	srv := bustest.RunServer(t)
	_, js := bustest.Connect(t, srv)
	subj, _ := schemas.NewSubjects("")
	httpAddr := freeAddr(t)
	b := &failoverBed{js: js, subj: subj, base: "http://" + httpAddr, workers: map[string]*exec.Cmd{}}
	start(t, "queen", "--server", srv.ClientURL(), "--http", httpAddr)
	for _, id := range []string{"fo-1", "fo-2"} {
		b.workers[id] = start(t, "worker", "--server", srv.ClientURL(), "--model-name", "stories260K", "--model", modelPath,
			"--worker-id", id, "--ctx", fmt.Sprint(failoverCtx), "--threads", "1", "--ack-wait", failoverLease.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	poll(t, 60*time.Second, func() error {
		ws, err := liveWorkers(ctx, js, subj)
		if err != nil || len(ws) != 2 {
			return fmt.Errorf("%d ready workers (%v), want 2", len(ws), err)
		}
		resp, err := http.Get(b.base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	return b
}

// unbroken is what the engine writes for req alone, in one piece.
func unbroken(t *testing.T, req infer.Request) string {
	t.Helper()
	m, err := infer.Load(modelPath, infer.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession(failoverCtx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Generate(context.Background(), req, func(infer.Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res.Text
}

// sseReader reads a completion's SSE chunks.
type sseReader struct {
	t    *testing.T
	resp *http.Response
	sc   *bufio.Scanner
}

func (b *failoverBed) stream(t *testing.T, body map[string]any) *sseReader {
	t.Helper()
	body["stream"] = true
	resp := postJSON(t, b.base+"/v1/completions", body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	t.Cleanup(func() { resp.Body.Close() })
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	return &sseReader{t: t, resp: resp, sc: sc}
}

// next returns the next chunk's text, or done at [DONE]; an error chunk
// fails the test.
func (r *sseReader) next() (text string, done bool) {
	r.t.Helper()
	for r.sc.Scan() {
		data, ok := strings.CutPrefix(r.sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return "", true
		}
		var chunk struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Error *schemas.Error `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			r.t.Fatalf("chunk %q: %v", data, err)
		}
		if chunk.Error != nil {
			r.t.Fatalf("error in the stream: %v", chunk.Error)
		}
		for _, c := range chunk.Choices {
			text += c.Text
		}
		return text, false
	}
	r.t.Fatalf("the stream ended without [DONE]: %v", r.sc.Err())
	return "", true
}

// readN reads chunks until n have come, and returns their text.
func (r *sseReader) readN(n int) string {
	r.t.Helper()
	var b strings.Builder
	for range n {
		text, done := r.next()
		if done {
			r.t.Fatal("the stream ended before the worker could be stopped: make the job longer")
		}
		b.WriteString(text)
	}
	return b.String()
}

func (r *sseReader) rest() string {
	r.t.Helper()
	var b strings.Builder
	for {
		text, done := r.next()
		if done {
			return b.String()
		}
		b.WriteString(text)
	}
}

// jobEvents reads every event the events stream holds for a job.
func (b *failoverBed) jobEvents(t *testing.T, jobID string) []schemas.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	str, err := b.js.Stream(ctx, b.subj.StreamsStream())
	if err != nil {
		t.Fatal(err)
	}
	var events []schemas.Event
	for seq := uint64(1); ; {
		msg, err := str.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(b.subj.JobEvents("*", jobID)))
		if err != nil {
			break
		}
		if events, err = schemas.DecodeEvents(events, msg.Data); err != nil {
			t.Fatal(err)
		}
		seq = msg.Sequence + 1
	}
	return events
}

// waitTakenOver waits until the job's newest stored event comes from its
// second delivery.
func (b *failoverBed) waitTakenOver(t *testing.T, jobID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	str, err := b.js.Stream(ctx, b.subj.StreamsStream())
	if err != nil {
		t.Fatal(err)
	}
	poll(t, time.Minute, func() error {
		msg, err := str.GetLastMsgForSubject(ctx, b.subj.JobEvents("*", jobID))
		if err != nil {
			return err
		}
		events, err := schemas.DecodeEvents(nil, msg.Data)
		if err != nil || len(events) == 0 {
			return fmt.Errorf("newest event: %v", err)
		}
		if d := events[len(events)-1].Delivery; d < 2 {
			return fmt.Errorf("newest event from delivery %d, want 2", d)
		}
		return nil
	})
}

// checkStored verifies what the stream holds for the job: one unbroken
// sequence, delivery numbers that only grow, and the last from delivery 2.
func checkStored(t *testing.T, events []schemas.Event) {
	t.Helper()
	if len(events) == 0 || !events[len(events)-1].Terminal() {
		t.Fatalf("%d stored events, want a stream that ends", len(events))
	}
	for i, ev := range events {
		if ev.Seq != i {
			t.Fatalf("stored event %d has seq %d", i, ev.Seq)
		}
		if i > 0 && ev.Delivery < events[i-1].Delivery {
			t.Fatalf("stored event %d from delivery %d after one from delivery %d", i, ev.Delivery, events[i-1].Delivery)
		}
	}
	if first, last := events[0], events[len(events)-1]; first.Delivery != 1 || last.Delivery != 2 || first.WorkerID == last.WorkerID {
		t.Errorf("first event from %s delivery %d, last from %s delivery %d: want the job to have moved",
			first.WorkerID, first.Delivery, last.WorkerID, last.Delivery)
	}
}

// Killing the worker mid-stream moves the job to the other worker, which
// resumes it: the client's text is exactly the unbroken run's, sampling
// included (with the client's seed here, so the test knows it).
func TestFailoverAfterWorkerKilled(t *testing.T) {
	b := newFailoverBed(t)
	seed := int64(42)
	want := unbroken(t, infer.Request{Prompt: "Once upon a time", MaxTokens: 3000,
		Sampling: sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, HasSeed: true, Seed: uint64(seed)}})
	r := b.stream(t, map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 3000,
		"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": seed})
	jobID, first := r.resp.Header.Get("X-Rbee-Job-Id"), r.resp.Header.Get("X-Rbee-Worker-Id")
	victim := b.workers[first]
	if victim == nil {
		t.Fatalf("X-Rbee-Worker-Id %q names no worker of the test", first)
	}
	got := r.readN(20)
	if err := victim.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = victim.Wait()
	got += r.rest()
	if got != want {
		t.Errorf("the stream after a worker was killed differs from an unbroken run (%d and %d bytes) %s",
			len(got), len(want), diverge(got, want))
	}
	checkStored(t, b.jobEvents(t, jobID))
}

// A worker paused past its lease and resumed after another took its job
// over can add nothing: the client's text is the unbroken run's, the
// stored stream has no repeat, and the paused worker reports it lost the
// job.
func TestFailoverAfterWorkerPausedPastLease(t *testing.T) {
	b := newFailoverBed(t)
	want := unbroken(t, infer.Request{Prompt: "Once upon a time", MaxTokens: 3000, Sampling: sample.Params{Temperature: 0}})
	r := b.stream(t, map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0})
	jobID, first := r.resp.Header.Get("X-Rbee-Job-Id"), r.resp.Header.Get("X-Rbee-Worker-Id")
	paused := b.workers[first]
	if paused == nil {
		t.Fatalf("X-Rbee-Worker-Id %q names no worker of the test", first)
	}
	got := r.readN(20)
	if err := paused.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// The other worker takes over once the lease lapses. Wake the paused
	// one only once it has: the paused worker may have written far ahead
	// of what the client has read, so reading alone proves nothing.
	b.waitTakenOver(t, jobID)
	got += r.readN(20)
	if err := paused.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	got += r.rest()
	if got != want {
		t.Errorf("the stream after a worker was paused differs from an unbroken run (%d and %d bytes) %s",
			len(got), len(want), diverge(got, want))
	}
	checkStored(t, b.jobEvents(t, jobID))
	b.waitAudit(t, jobID, first, schemas.OutcomeTakenOver)
}

// waitAudit waits for the worker's job.finished audit event of the job.
func (b *failoverBed) waitAudit(t *testing.T, jobID, workerID, outcome string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	poll(t, 60*time.Second, func() error {
		cons, err := b.js.OrderedConsumer(ctx, b.subj.EventsStream(), jetstream.OrderedConsumerConfig{})
		if err != nil {
			return err
		}
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return err
		}
		var seen []string
		for msg := range batch.Messages() {
			var ev schemas.AuditEvent
			if json.Unmarshal(msg.Data(), &ev) == nil && ev.JobID == jobID {
				seen = append(seen, ev.WorkerID+":"+ev.Outcome)
				if ev.WorkerID == workerID && ev.Outcome == outcome {
					return nil
				}
			}
		}
		return fmt.Errorf("audit events of job %s: %v, want %s:%s", jobID, seen, workerID, outcome)
	})
}

// diverge is where a and b first differ, with some context.
func diverge(a, b string) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	return fmt.Sprintf("at byte %d: %q / %q", i, a[max(i-40, 0):min(i+40, len(a))], b[max(i-40, 0):min(i+40, len(b))])
}
