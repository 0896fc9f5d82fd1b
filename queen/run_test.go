package queen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/rbee-dev/rbee/schemas"
)

// run starts f.q.Run and returns a function that stops it and returns
// Run's error; the test's cleanup stops it too.
func (f *fixture) run() (stop func() error) {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- f.q.Run(ctx) }()
	select {
	case <-f.q.Ready():
	case err := <-result:
		cancel()
		f.t.Fatalf("Run: %v", err)
	case <-time.After(waitFor):
		cancel()
		f.t.Fatal("Run did not become ready")
	}
	var err error
	stopped := false
	stop = func() error {
		if stopped {
			return err
		}
		stopped = true
		cancel()
		select {
		case err = <-result:
		case <-time.After(waitFor):
			f.t.Fatal("Run did not return after its context ended")
		}
		return err
	}
	f.t.Cleanup(func() { stop() })
	return stop
}

// infer sends an InferRequest to the micro endpoint the way
// `nats req --wait-for-empty` would and returns what came back before the
// empty message.
func (f *fixture) infer(body string) []*nats.Msg {
	f.t.Helper()
	inbox := f.nc.NewInbox()
	sub, err := f.nc.SubscribeSync(inbox)
	if err != nil {
		f.t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := f.nc.PublishRequest(f.subj.Infer(), inbox, []byte(body)); err != nil {
		f.t.Fatal(err)
	}
	var msgs []*nats.Msg
	for {
		msg, err := sub.NextMsg(waitFor)
		if err != nil {
			f.t.Fatalf("after %d messages: %v", len(msgs), err)
		}
		if len(msg.Data) == 0 && len(msg.Header) == 0 {
			return msgs
		}
		msgs = append(msgs, msg)
	}
}

func TestMicroInferStreamsFromWorker(t *testing.T) {
	f := newFixture(t, nil)
	f.run()
	taken := f.startWorker(model, say("Once", " upon"))

	msgs := f.infer(`{"model":"stories260K","prompt":"Once upon a time","max_tokens":32}`)
	j := recvJob(t, taken)
	var types []schemas.EventType
	var text string
	for i, m := range msgs {
		var ev schemas.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if ev.Seq != i || ev.JobID != j.Job.ID {
			t.Errorf("event %d: seq %d of job %s", i, ev.Seq, ev.JobID)
		}
		types = append(types, ev.Type)
		text += ev.Text
	}
	jsonEqual(t, types, []schemas.EventType{schemas.EventToken, schemas.EventToken, schemas.EventEnd})
	if text != "Once upon" {
		t.Errorf("text %q", text)
	}
	if j.Job.Prompt != "Once upon a time" || j.Job.MaxTokens != 32 {
		t.Errorf("job %+v", j.Job)
	}
	if j.Job.Principal != "nats:anonymous" {
		t.Errorf("principal %q, want nats:anonymous from a server that authenticates nobody", j.Job.Principal)
	}
	if want := f.subj.JobEvents(f.q.cfg.ID, j.Job.ID); j.Job.Stream != want {
		t.Errorf("job stream %q, want %q: under the queen, which relays to the requester", j.Job.Stream, want)
	}
	checkFor(t, func() error {
		if !strings.Contains(f.scrape(), `rbee_queen_requests_total{code="200",endpoint="infer"} 1`) {
			return errors.New("infer request not counted")
		}
		return nil
	})
}

func TestMicroInferClientJobID(t *testing.T) {
	f := newFixture(t, nil)
	f.run()
	started := make(chan string, 4)
	taken := f.startWorker(model, func(j *fakeJob) {
		started <- j.Job.ID
		j.token("Once")
		j.end(schemas.StopReasonStop, schemas.Usage{PromptTokens: 1, CompletionTokens: 1, TotalTokens: 2})
	})
	body := `{"id":"my-job-7","model":"stories260K","prompt":"x"}`
	for attempt := range 2 {
		msgs := f.infer(body)
		var text string
		for _, m := range msgs {
			var ev schemas.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatal(err)
			}
			if ev.JobID != "my-job-7" {
				t.Errorf("attempt %d: event of job %q, want the client's ID", attempt, ev.JobID)
			}
			text += ev.Text
		}
		if text != "Once" {
			t.Errorf("attempt %d: text %q", attempt, text)
		}
	}
	if id := <-started; id != "my-job-7" {
		t.Errorf("worker ran job %q", id)
	}
	recvJob(t, taken)
	select {
	case again := <-started:
		t.Errorf("a repeat with the same ID ran job %s again", again)
	default:
	}
}

// A NATS requester that goes away (nats req stopped with Ctrl-C) has its
// job cancelled at the next event, as an HTTP client that hangs up does.
func TestMicroRequesterGoneCancelsJob(t *testing.T) {
	f := newFixture(t, nil)
	f.run()
	cancelled := make(chan string, 1)
	taken := f.startWorker(model, func(j *fakeJob) {
		sub, err := j.nc.SubscribeSync(f.subj.CancelKey(j.Job.ID))
		if err != nil {
			t.Error(err)
			return
		}
		defer sub.Unsubscribe()
		for range 1000 {
			j.token(" more")
			if msg, err := sub.NextMsg(10 * time.Millisecond); err == nil {
				cancelled <- msg.Subject
				return
			}
		}
	})
	inbox := f.nc.NewInbox()
	sub, err := f.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.nc.PublishRequest(f.subj.Infer(), inbox, []byte(`{"model":"stories260K","prompt":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(waitFor); err != nil {
		t.Fatalf("first event: %v", err)
	}
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	j := recvJob(t, taken)
	select {
	case subject := <-cancelled:
		if subject != f.subj.CancelKey(j.Job.ID) {
			t.Errorf("cancel on %s", subject)
		}
	case <-time.After(waitFor):
		t.Fatal("the job of a requester that went away was not cancelled")
	}
	checkFor(t, func() error {
		if m := f.scrape(); !strings.Contains(m, `rbee_queen_jobs_finished_total{model="stories260K",result="cancelled"} 1`) {
			return errors.New("no cancelled job in metrics")
		}
		return nil
	})
}

func TestMicroInferErrors(t *testing.T) {
	f := newFixture(t, nil)
	f.run()
	f.putWorker("w1", model, schemas.WorkerReady)
	for _, tc := range []struct {
		name, body string
		code       schemas.Code
		message    string
	}{
		{"unknown model", `{"model":"gpt-9","prompt":"x"}`, schemas.CodeModelNotFound, "gpt-9"},
		{"bad JSON", `{"model":`, schemas.CodeInvalidRequest, "InferRequest"},
		{"unknown field", `{"model":"stories260K","prompt":"x","max_token":3}`, schemas.CodeInvalidRequest, "max_token"},
		{"invalid", `{"model":"stories260K","prompt":"x","top_p":3}`, schemas.CodeInvalidRequest, "top_p"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs := f.infer(tc.body)
			if len(msgs) != 1 {
				t.Fatalf("%d messages before the empty one, want one error", len(msgs))
			}
			m := msgs[0]
			if got := m.Header.Get(micro.ErrorCodeHeader); got != string(tc.code) {
				t.Errorf("%s %q, want %s", micro.ErrorCodeHeader, got, tc.code)
			}
			desc := m.Header.Get(micro.ErrorHeader)
			if !strings.Contains(desc, tc.message) {
				t.Errorf("%s %q does not mention %q", micro.ErrorHeader, desc, tc.message)
			}
			jsonEqual(t, decodeObject(t, string(m.Data)), schemas.ErrorResponse{Error: schemas.Error{Code: tc.code, Message: desc, Retryable: tc.code.Retryable()}})
		})
	}
	// The handler counts a request after it has answered it.
	checkFor(t, func() error {
		want := `rbee_queen_requests_total{code="400",endpoint="infer"} 3`
		if !slices.Contains(strings.Split(f.scrape(), "\n"), want) {
			return fmt.Errorf("metrics lack the line %q", want)
		}
		return nil
	})
}

func TestMicroServiceIdentity(t *testing.T) {
	f := newFixture(t, nil)
	f.run()
	msg, err := f.nc.Request("$SRV.INFO."+ServiceName, nil, waitFor)
	if err != nil {
		t.Fatalf("service info: %v", err)
	}
	var info micro.Info
	if err := json.Unmarshal(msg.Data, &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != ServiceName || info.Version != ServiceVersion || len(info.Endpoints) != 1 ||
		info.Endpoints[0].Name != "infer" || info.Endpoints[0].Subject != f.subj.Infer() {
		t.Errorf("service info %+v", info)
	}
}

func TestRunServesHTTPAndStops(t *testing.T) {
	f := newFixture(t, nil)
	if f.q.Addr() != "" {
		t.Errorf("Addr %q before Run", f.q.Addr())
	}
	stop := f.run()
	resp, err := http.Get("http://" + f.q.Addr() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz %d", resp.StatusCode)
	}
	if err := f.q.Run(context.Background()); err == nil {
		t.Error("a second Run succeeded")
	}
	if err := stop(); err != nil {
		t.Errorf("Run returned %v", err)
	}
	if _, err := http.Get("http://" + f.q.Addr() + "/healthz"); err == nil {
		t.Error("still serving after Run returned")
	}
	// The micro service is gone too.
	if _, err := f.nc.Request(f.subj.Infer(), []byte(`{}`), time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Errorf("infer after stop: %v, want no responders", err)
	}
}

// An idle keep-alive connection is closed by the queen after the
// keep-alive timeout.
func TestIdleKeepAliveConnectionIsClosed(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.KeepAliveTimeout = 200 * time.Millisecond })
	f.run()
	conn, err := net.Dial("tcp", f.q.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: q\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(waitFor)); err != nil {
		t.Fatal(err)
	}
	// The answer, then the end of the connection, well before waitFor.
	rest, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
	if !strings.HasPrefix(string(rest), "HTTP/1.1 200") {
		t.Errorf("answer %q", rest)
	}
}

func TestRunPortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	f := newFixture(t, func(c *Config) { c.HTTPAddr = ln.Addr().String() })
	err = f.q.Run(f.ctx())
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run on a taken port: %v, want the listen error", err)
	}
	select {
	case <-f.q.Ready():
		t.Error("Ready closed although Run failed")
	default:
	}
}

// A stream still running when the grace period ends is cancelled: the
// client's response ends and the worker is told to stop.
func TestShutdownCancelsStreamsAfterGrace(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.ShutdownGrace = 100 * time.Millisecond })
	stop := f.run()
	cancels := f.subscribeCancel()
	started := make(chan struct{})
	taken := f.startWorker(model, func(j *fakeJob) {
		sub, err := j.nc.SubscribeSync(f.subj.CancelKey(j.Job.ID))
		if err != nil {
			t.Error(err)
			return
		}
		defer sub.Unsubscribe()
		j.token("Once")
		close(started)
		// A long generation: the queen's shutdown ends it.
		if _, err := sub.NextMsg(waitFor); err != nil {
			t.Errorf("worker never told to cancel: %v", err)
		}
	})

	resp := f.open(f.ctx(), "http://"+f.q.Addr()+"/v1/chat/completions", `{"model":"stories260K","messages":[{"role":"user","content":"x"}],"stream":true}`)
	defer resp.Body.Close()
	select {
	case <-started:
	case <-time.After(waitFor):
		t.Fatal("the worker did not start the job")
	}
	if err := stop(); err != nil {
		t.Errorf("Run returned %v", err)
	}
	// The body ends (cut or closed) instead of hanging.
	if _, err := io.ReadAll(resp.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("stream ended with %v", err)
	}
	j := recvJob(t, taken)
	expectCancel(t, cancels, f.subj.CancelKey(j.Job.ID))
}
