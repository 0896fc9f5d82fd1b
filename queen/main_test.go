package queen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitFor bounds every wait in these tests; they normally take milliseconds.
const waitFor = 10 * time.Second

// fixture is a queen on a real embedded JetStream server, served by an
// httptest server.
type fixture struct {
	t    *testing.T
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	subj schemas.Subjects
	q    *Queen
	http *httptest.Server
}

func newFixture(t *testing.T, mod func(*Config)) *fixture {
	t.Helper()
	s, nc, js, subj := bustest.Provisioned(t)
	cfg := Config{HTTPAddr: "127.0.0.1:0", Subjects: subj}
	if mod != nil {
		mod(&cfg)
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	q, err := New(nc, cfg, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(q.Handler())
	t.Cleanup(func() {
		hs.Close()
		q.Close()
	})
	return &fixture{t: t, srv: s, nc: nc, js: js, subj: subj, q: q, http: hs}
}

func (f *fixture) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	f.t.Cleanup(cancel)
	return ctx
}

// putWorker writes a live worker's heartbeat into the workers bucket.
func (f *fixture) putWorker(id, model, state string) {
	f.t.Helper()
	kv, err := f.js.KeyValue(f.ctx(), f.subj.WorkersBucket())
	if err != nil {
		f.t.Fatalf("workers bucket: %v", err)
	}
	hb := schemas.WorkerHeartbeat{WorkerID: id, Model: model, State: state, Slots: 1, PID: 1, Context: 512, Time: time.Now()}
	data, err := json.Marshal(hb)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := kv.Put(f.ctx(), id, data); err != nil {
		f.t.Fatalf("put worker %s: %v", id, err)
	}
}

func (f *fixture) deleteWorker(id string) {
	f.t.Helper()
	kv, err := f.js.KeyValue(f.ctx(), f.subj.WorkersBucket())
	if err != nil {
		f.t.Fatalf("workers bucket: %v", err)
	}
	if err := kv.Delete(f.ctx(), id); err != nil {
		f.t.Fatalf("delete worker %s: %v", id, err)
	}
}

// fakeJob is one job a fake worker took, with helpers that publish events
// the way the contract says a worker does: on the job's stream subject,
// one event a message.
type fakeJob struct {
	t      *testing.T
	nc     *nats.Conn
	js     jetstream.JetStream
	Job    schemas.Job
	Header nats.Header
	seq    int
}

func (j *fakeJob) emit(ev schemas.Event) {
	ev.JobID, ev.Seq, ev.WorkerID, ev.Delivery = j.Job.ID, j.seq, "fake-worker", 1
	j.seq++
	j.publish(ev)
}

// publish writes events as they are, numbered or not, signed with the
// job's key as the worker holding it signs them.
func (j *fakeJob) publish(events ...schemas.Event) {
	data, err := schemas.EncodeEvents(events)
	if err != nil {
		j.t.Errorf("encode events: %v", err)
		return
	}
	signer, err := j.Job.EventKey.EventSigner()
	if err != nil || signer == nil {
		j.t.Errorf("the job's event key: %v, want one", err)
		return
	}
	msg := &nats.Msg{Subject: j.Job.Stream, Data: data, Header: nats.Header{}}
	msg.Header.Set(schemas.HeaderEventMAC, signer.Sign(j.Job.Stream, data))
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if _, err := j.js.PublishMsg(ctx, msg); err != nil {
		j.t.Errorf("publish events: %v", err)
	}
}

func (j *fakeJob) token(text string) {
	id := int32(j.seq + 100)
	j.emit(schemas.Event{Type: schemas.EventToken, Text: text, TokenID: &id})
}

func (j *fakeJob) end(reason string, usage schemas.Usage) {
	j.emit(schemas.Event{Type: schemas.EventEnd, StopReason: reason, Usage: &usage})
}

func (j *fakeJob) fail(code schemas.Code, msg string) {
	j.emit(schemas.Event{Type: schemas.EventError, Error: &schemas.Error{Code: code, Message: msg}})
}

// startWorker runs a fake worker for model: it pulls jobs from the real work
// queue through the durable consumer workers share, acks each and runs
// script on it. Jobs taken are sent on the returned channel after script.
func (f *fixture) startWorker(model string, script func(*fakeJob)) <-chan *fakeJob {
	f.t.Helper()
	f.putWorker("w-"+strings.ReplaceAll(model, ":", "-"), model, schemas.WorkerReady)
	cons, err := bus.EnsureJobsConsumer(f.ctx(), f.js, f.subj, model, 30*time.Second, -1)
	if err != nil {
		f.t.Fatalf("jobs consumer: %v", err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1))
	if err != nil {
		f.t.Fatalf("consume jobs: %v", err)
	}
	taken := make(chan *fakeJob, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			msg, err := it.Next()
			if err != nil {
				return // stopped
			}
			j := &fakeJob{t: f.t, nc: f.nc, js: f.js, Header: msg.Headers()}
			if err := json.Unmarshal(msg.Data(), &j.Job); err != nil {
				f.t.Errorf("decode job: %v", err)
				msg.Term()
				continue
			}
			if err := msg.Ack(); err != nil {
				f.t.Errorf("ack job: %v", err)
			}
			script(j)
			taken <- j
		}
	}()
	f.t.Cleanup(func() {
		it.Stop()
		wg.Wait()
	})
	return taken
}

// say is a script that streams the given tokens and ends with stop.
func say(tokens ...string) func(*fakeJob) {
	return func(j *fakeJob) {
		for _, s := range tokens {
			j.token(s)
		}
		j.end(schemas.StopReasonStop, schemas.Usage{PromptTokens: 5, CompletionTokens: len(tokens), TotalTokens: 5 + len(tokens)})
	}
}

func recvJob(t *testing.T, taken <-chan *fakeJob) *fakeJob {
	t.Helper()
	select {
	case j := <-taken:
		return j
	case <-time.After(waitFor):
		t.Fatal("the fake worker took no job")
		return nil
	}
}

// open posts body to url and returns the response, its body unread.
func (f *fixture) open(ctx context.Context, url, body string) *http.Response {
	f.t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("POST %s: %v", url, err)
	}
	return resp
}

// post sends a JSON body and returns the status and the decoded body.
func (f *fixture) post(path, body string) (*http.Response, map[string]any) {
	f.t.Helper()
	return f.do(http.MethodPost, path, body)
}

func (f *fixture) do(method, path, body string) (*http.Response, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.ctx(), method, f.http.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("read body: %v", err)
	}
	var v map[string]any
	if err := json.Unmarshal(data, &v); err != nil {
		f.t.Fatalf("%s %s: body is not a JSON object: %v\n%s", method, path, err, data)
	}
	return resp, v
}

// readSSE reads "data:" events up to and including [DONE].
func readSSE(t *testing.T, r io.Reader) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("SSE line %q is not a data line", line)
		}
		events = append(events, data)
		if data == "[DONE]" {
			return events
		}
	}
	t.Fatalf("SSE stream ended without [DONE] (err %v) after %q", sc.Err(), events)
	return nil
}

func decodeObject(t *testing.T, s string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("%q is not a JSON object: %v", s, err)
	}
	return v
}

// jsonEqual compares got with want after both go through JSON, so numbers
// and nested shapes compare the way a client sees them.
func jsonEqual(t *testing.T, got, want any) {
	t.Helper()
	norm := func(v any) string {
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		var out any
		if err := json.Unmarshal(data, &out); err != nil {
			t.Fatal(err)
		}
		pretty, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		return string(pretty)
	}
	if g, w := norm(got), norm(want); g != w {
		t.Errorf("JSON differs\ngot:  %s\nwant: %s", g, w)
	}
}

// checkFor polls f until it returns nil or waitFor has passed.
func checkFor(t *testing.T, f func() error) {
	t.Helper()
	bustest.CheckFor(t, waitFor, f)
}

// scrape returns the /metrics text.
func (f *fixture) scrape() string {
	f.t.Helper()
	resp, err := http.Get(f.http.URL + "/metrics")
	if err != nil {
		f.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, resp.Body); err != nil {
		f.t.Fatal(err)
	}
	return b.String()
}

func wantMetric(t *testing.T, text, line string) {
	t.Helper()
	for l := range strings.SplitSeq(text, "\n") {
		if l == line {
			return
		}
	}
	t.Errorf("metrics lack the line %q", line)
}
