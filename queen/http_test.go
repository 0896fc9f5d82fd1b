package queen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

const model = "stories260K"

func TestChatCompletion(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say("Once", " upon", " a time"))

	resp, body := f.post("/v1/chat/completions", `{
		"model": "stories260K",
		"messages": [{"role": "system", "content": "Tell stories."},
		             {"role": "user", "content": [{"type": "text", "text": "Once"}, {"type": "text", "text": " more"}]}],
		"temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 7,
		"presence_penalty": 0.1, "frequency_penalty": 0.2, "repeat_penalty": 1.1,
		"stop": "The end", "max_tokens": 99, "max_completion_tokens": 32,
		"user": "ignored", "logit_bias": {}, "metadata": {"team": "a"}, "store": false
	}`)
	j := recvJob(t, taken)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	jsonEqual(t, body, map[string]any{
		"id":      "chatcmpl-" + j.Job.ID,
		"object":  "chat.completion",
		"created": j.Job.CreatedAt.Unix(),
		"model":   model,
		"choices": []any{map[string]any{
			"index":         0,
			"message":       map[string]any{"role": "assistant", "content": "Once upon a time"},
			"finish_reason": "stop",
			"logprobs":      nil,
		}},
		"usage": map[string]any{"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
	})

	// The job on the queue carries what the request asked for.
	temp, seed := 0.5, int64(7)
	jsonEqual(t, j.Job, schemas.Job{
		ID: j.Job.ID, Model: model, Stream: f.subj.JobEvents(f.q.cfg.ID, j.Job.ID), CreatedAt: j.Job.CreatedAt,
		Deadline: j.Job.CreatedAt.Add(DefaultTimeout), EventKey: j.Job.EventKey,
		Messages:  []schemas.Message{{Role: "system", Content: "Tell stories."}, {Role: "user", Content: "Once more"}},
		MaxTokens: 32, Stop: []string{"The end"},
		Sampling: schemas.Sampling{Temperature: &temp, TopP: 0.9, TopK: 40, MinP: 0.05, Seed: &seed,
			PresencePenalty: 0.1, FrequencyPenalty: 0.2, RepeatPenalty: 1.1},
	})
	if got := j.Header.Get(schemas.HeaderMsgID); got != j.Job.ID {
		t.Errorf("Nats-Msg-Id %q, want the job ID %q", got, j.Job.ID)
	}
	if got := j.Header.Get(schemas.HeaderSchema); got != "job/v2" {
		t.Errorf("Rbee-Schema %q, want job/v2", got)
	}
	if signer, err := j.Job.EventKey.EventSigner(); signer == nil || err != nil {
		t.Errorf("the job's event key: %v, want a fresh one", err)
	}
	if !schemas.ValidID(j.Job.ID) || len(j.Job.ID) < 20 {
		t.Errorf("job ID %q: want a long random valid ID", j.Job.ID)
	}

	metrics := f.scrape()
	wantMetric(t, metrics, `rbee_queen_requests_total{code="200",endpoint="POST /v1/chat/completions"} 1`)
	wantMetric(t, metrics, `rbee_queen_tokens_streamed_total{model="stories260K"} 3`)
	wantMetric(t, metrics, `rbee_queen_jobs_finished_total{model="stories260K",result="stop"} 1`)
	wantMetric(t, metrics, `rbee_queen_time_to_first_token_seconds_count{model="stories260K"} 1`)
	wantMetric(t, metrics, `rbee_queen_jobs_in_flight 0`)
}

func TestTextCompletion(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, func(j *fakeJob) {
		j.token(" there")
		j.token(" was")
		j.end(schemas.StopReasonLength, schemas.Usage{PromptTokens: 4, CompletionTokens: 2, TotalTokens: 6})
	})

	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":["Once upon a time"],"stop":["\n","."],"stream":false}`)
	j := recvJob(t, taken)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	jsonEqual(t, body, map[string]any{
		"id":      "cmpl-" + j.Job.ID,
		"object":  "text_completion",
		"created": j.Job.CreatedAt.Unix(),
		"model":   model,
		"choices": []any{map[string]any{"index": 0, "text": " there was", "finish_reason": "length", "logprobs": nil}},
		"usage":   map[string]any{"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6},
	})
	if j.Job.Prompt != "Once upon a time" || j.Job.MaxTokens != DefaultMaxTokens || len(j.Job.Stop) != 2 {
		t.Errorf("queued job %+v: want the prompt, the default max_tokens and two stops", j.Job)
	}
}

func TestChatStream(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say("Once", " upon"))

	resp := f.open(f.ctx(), f.http.URL+"/v1/chat/completions", `{"model":"stories260K","messages":[{"role":"user","content":"Hi"}],"stream":true,"stream_options":{"include_usage":true}}`)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q, want text/event-stream", ct)
	}
	events := readSSE(t, resp.Body)
	j := recvJob(t, taken)
	head := func(obj string) map[string]any {
		return map[string]any{"id": "chatcmpl-" + j.Job.ID, "object": obj, "created": j.Job.CreatedAt.Unix(), "model": model}
	}
	chunk := func(delta map[string]any, finish any) map[string]any {
		c := head("chat.completion.chunk")
		c["choices"] = []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": nil}}
		return c
	}
	usage := head("chat.completion.chunk")
	usage["choices"] = []any{}
	usage["usage"] = map[string]any{"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
	want := []any{
		chunk(map[string]any{"role": "assistant", "content": "Once"}, nil),
		chunk(map[string]any{"content": " upon"}, nil),
		chunk(map[string]any{}, "stop"),
		usage,
	}
	if len(events) != len(want)+1 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q: want %d chunks and [DONE]", events, len(want))
	}
	var got []any
	for _, e := range events[:len(want)] {
		got = append(got, decodeObject(t, e))
	}
	jsonEqual(t, got, want)
}

func TestCompletionStreamWithoutUsage(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, say("A", "B"))

	resp := f.open(f.ctx(), f.http.URL+"/v1/completions", `{"model":"stories260K","prompt":"x","stream":true}`)
	defer resp.Body.Close()
	events := readSSE(t, resp.Body)
	var texts []string
	var finish []any
	for _, e := range events[:len(events)-1] {
		c := decodeObject(t, e)
		if c["object"] != "text_completion" {
			t.Errorf("chunk object %v", c["object"])
		}
		if _, ok := c["usage"]; ok {
			t.Errorf("chunk %s has usage, which the client did not ask for", e)
		}
		choice := c["choices"].([]any)[0].(map[string]any)
		texts = append(texts, choice["text"].(string))
		finish = append(finish, choice["finish_reason"])
	}
	jsonEqual(t, texts, []string{"A", "B", ""})
	jsonEqual(t, finish, []any{nil, nil, "stop"})
}

func TestErrorResponses(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", model, schemas.WorkerReady)
	f.putWorker("w2", "drained", schemas.WorkerDraining)
	chat := "/v1/chat/completions"
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code                     schemas.Code
		message                  string // a part of it
	}{
		{"bad JSON", "POST", chat, `{"model":`, 400, schemas.CodeInvalidRequest, "not valid JSON"},
		{"wrong type", "POST", chat, `{"model":"stories260K","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, 400, schemas.CodeInvalidRequest, "temperature"},
		{"unknown model", "POST", chat, `{"model":"gpt-9","messages":[{"role":"user","content":"x"}]}`, 404, schemas.CodeModelNotFound, "gpt-9"},
		{"invalid temperature", "POST", chat, `{"model":"stories260K","messages":[{"role":"user","content":"x"}],"temperature":20}`, 400, schemas.CodeInvalidRequest, "temperature 20"},
		{"invalid model name", "POST", chat, `{"model":"a.b","messages":[{"role":"user","content":"x"}]}`, 400, schemas.CodeInvalidRequest, "a.b"},
		{"no messages", "POST", chat, `{"model":"stories260K","messages":[]}`, 400, schemas.CodeInvalidRequest, "messages is empty"},
		{"bad role", "POST", chat, `{"model":"stories260K","messages":[{"role":"robot","content":"x"}]}`, 400, schemas.CodeInvalidRequest, "robot"},
		{"image part", "POST", chat, `{"model":"stories260K","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, schemas.CodeInvalidRequest, "image_url"},
		{"n above the limit", "POST", chat, `{"model":"stories260K","n":5,"messages":[{"role":"user","content":"x"}]}`, 400, schemas.CodeInvalidRequest, "n 5"},
		{"two prompts", "POST", "/v1/completions", `{"model":"stories260K","prompt":["a","b"]}`, 400, schemas.CodeInvalidRequest, "2 strings"},
		{"token prompt", "POST", "/v1/completions", `{"model":"stories260K","prompt":[1,2]}`, 400, schemas.CodeInvalidRequest, "array of strings"},
		{"draining only", "POST", "/v1/completions", `{"model":"drained","prompt":"x"}`, 503, schemas.CodeNoCapacity, "draining"},
		{"body too large", "POST", chat, `{"model":"` + strings.Repeat("x", maxBodyBytes) + `"}`, 413, schemas.CodeTooLarge, "exceeds"},
		{"wrong method", "GET", chat, ``, 405, schemas.CodeMethodNotAllowed, "GET"},
		{"unknown path", "GET", "/v1/audio/speech", ``, 404, schemas.CodeNotFound, "/v1/audio/speech"},
		{"root", "POST", "/", `{}`, 404, schemas.CodeNotFound, "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := f.do(tc.method, tc.path, tc.body)
			if resp.StatusCode != tc.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			e, ok := body["error"].(map[string]any)
			if !ok || len(body) != 1 || e["message"] == nil || len(e) > 3 || len(e) == 3 && e["retryable"] != true {
				t.Fatalf("body %v: want exactly {\"error\":{\"code\",\"message\"[,\"retryable\":true]}}", body)
			}
			if (e["retryable"] == true) != tc.code.Retryable() {
				t.Errorf("retryable %v for %s", e["retryable"], tc.code)
			}
			if e["code"] != string(tc.code) {
				t.Errorf("code %v, want %s", e["code"], tc.code)
			}
			if msg, _ := e["message"].(string); !strings.Contains(msg, tc.message) {
				t.Errorf("message %q does not mention %q", msg, tc.message)
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "POST" {
				t.Errorf("Allow %q, want POST", resp.Header.Get("Allow"))
			}
		})
	}
	wantMetric(t, f.scrape(), `rbee_queen_requests_total{code="404",endpoint="unmatched"} 2`)
}

func TestWorkerErrorEvent(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, func(j *fakeJob) {
		j.fail(schemas.CodeContextExceeded, "prompt is 600 tokens, context 512")
	})
	resp, body := f.post("/v1/chat/completions", `{"model":"stories260K","messages":[{"role":"user","content":"long"}]}`)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("status %d, want 400", resp.StatusCode)
	}
	jsonEqual(t, body, schemas.ErrorResponse{Error: schemas.Error{Code: schemas.CodeContextExceeded, Message: "prompt is 600 tokens, context 512"}})
}

func TestErrorBeforeFirstTokenOfAStream(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, func(j *fakeJob) { j.fail(schemas.CodeEngineFailure, "boom") })
	resp, body := f.post("/v1/chat/completions", `{"model":"stories260K","messages":[{"role":"user","content":"x"}],"stream":true}`)
	if resp.StatusCode != http.StatusInternalServerError || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("status %d, Content-Type %q: want a plain JSON 500", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	jsonEqual(t, body, schemas.ErrorResponse{Error: schemas.Error{Code: schemas.CodeEngineFailure, Message: "boom"}})
}

// stream posts a streaming chat request and returns its SSE events.
func (f *fixture) stream(body string) []string {
	f.t.Helper()
	resp := f.open(f.ctx(), f.http.URL+"/v1/chat/completions", body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("status %d", resp.StatusCode)
	}
	return readSSE(f.t, resp.Body)
}

func TestErrorAfterStreamBegan(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, func(j *fakeJob) {
		j.token("Once")
		j.fail(schemas.CodeWorkerShutdown, "worker stopping")
	})
	events := f.stream(`{"model":"stories260K","messages":[{"role":"user","content":"x"}],"stream":true}`)
	if len(events) != 3 {
		t.Fatalf("events %q: want a chunk, an error and [DONE]", events)
	}
	jsonEqual(t, decodeObject(t, events[1]), schemas.ErrorResponse{Error: schemas.Error{Code: schemas.CodeWorkerShutdown, Message: "worker stopping"}})
}

// subscribeCancel watches the cancels bucket's key of every job.
func (f *fixture) subscribeCancel() *nats.Subscription {
	f.t.Helper()
	sub, err := f.nc.SubscribeSync(f.subj.CancelKey("*"))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.nc.Flush(); err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { sub.Unsubscribe() })
	return sub
}

func expectCancel(t *testing.T, sub *nats.Subscription, subject string) {
	t.Helper()
	msg, err := sub.NextMsg(waitFor)
	if err != nil {
		t.Fatalf("no cancel message: %v", err)
	}
	if msg.Subject != subject {
		t.Errorf("cancel on %s, want %s", msg.Subject, subject)
	}
}

func TestSequenceGap(t *testing.T) {
	f := newFixture(t, nil)
	cancels := f.subscribeCancel()
	taken := f.startWorker(model, func(j *fakeJob) {
		j.token("a")
		j.seq++ // seq 1 is lost
		j.token("c")
		j.end(schemas.StopReasonStop, schemas.Usage{})
	})
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"x"}`)
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", resp.StatusCode)
	}
	jsonEqual(t, body, schemas.ErrorResponse{Error: *schemas.Errorf(schemas.CodeInternal, "job events lost")})
	j := recvJob(t, taken)
	expectCancel(t, cancels, f.subj.CancelKey(j.Job.ID))
}

func TestClientDisconnectCancelsJob(t *testing.T) {
	f := newFixture(t, nil)
	cancelled := make(chan string, 1)
	taken := f.startWorker(model, func(j *fakeJob) {
		sub, err := j.nc.SubscribeSync(f.subj.CancelKey(j.Job.ID))
		if err != nil {
			t.Error(err)
			return
		}
		defer sub.Unsubscribe()
		j.token("Once")
		// Keep streaming, as a worker does, until told to stop.
		for range 1000 {
			if msg, err := sub.NextMsg(10 * time.Millisecond); err == nil {
				cancelled <- msg.Subject
				return
			}
			j.token(" more")
		}
	})

	ctx, hangUp := context.WithCancel(f.ctx())
	defer hangUp()
	resp := f.open(ctx, f.http.URL+"/v1/chat/completions", `{"model":"stories260K","messages":[{"role":"user","content":"x"}],"stream":true}`)
	buf := make([]byte, 64)
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatalf("read first chunk: %v", err)
	}
	hangUp()
	resp.Body.Close()

	j := recvJob(t, taken)
	select {
	case subj := <-cancelled:
		if subj != f.subj.CancelKey(j.Job.ID) {
			t.Errorf("cancel on %s", subj)
		}
	case <-time.After(waitFor):
		t.Fatal("the worker was not told to cancel")
	}
	checkFor(t, func() error {
		if m := f.scrape(); !strings.Contains(m, `rbee_queen_jobs_finished_total{model="stories260K",result="cancelled"} 1`) {
			return errors.New("no cancelled job in metrics")
		}
		return nil
	})
}

func TestFirstTokenTimeout(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.FirstTokenTimeout = 200 * time.Millisecond })
	f.putWorker("w1", model, schemas.WorkerReady) // alive, but it never pulls
	cancels := f.subscribeCancel()
	start := time.Now()
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"x"}`)
	if resp.StatusCode != http.StatusGatewayTimeout {
		t.Errorf("status %d, want 504 after %v", resp.StatusCode, time.Since(start))
	}
	if e := body["error"].(map[string]any); e["code"] != string(schemas.CodeTimeout) {
		t.Errorf("error %v", e)
	}
	msg, err := cancels.NextMsg(waitFor)
	if err != nil {
		t.Fatalf("no cancel after a timeout: %v", err)
	}
	if !strings.HasPrefix(msg.Subject, f.subj.CancelKey("")) {
		t.Errorf("cancel on %s", msg.Subject)
	}
}

func TestIdleTimeoutInStream(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.IdleTimeout = 200 * time.Millisecond })
	f.startWorker(model, func(j *fakeJob) { j.token("Once") }) // then silence
	events := f.stream(`{"model":"stories260K","messages":[{"role":"user","content":"x"}],"stream":true}`)
	if len(events) != 3 {
		t.Fatalf("events %q: want a chunk, an error and [DONE]", events)
	}
	e := decodeObject(t, events[1])["error"].(map[string]any)
	if e["code"] != string(schemas.CodeTimeout) {
		t.Errorf("error %v, want timeout", e)
	}
}

func TestQueueFull(t *testing.T) {
	f := newFixture(t, nil)
	if err := bus.Provision(f.ctx(), f.js, f.subj, bus.Provisioning{JobsMaxMsgs: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.js.Publish(f.ctx(), f.subj.Jobs(model), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	f.putWorker("w1", model, schemas.WorkerReady)
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"x"}`)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("status %d, Retry-After %q: want 429 with a Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if e := body["error"].(map[string]any); e["code"] != string(schemas.CodeQueueFull) || e["retryable"] != true {
		t.Errorf("error %v", e)
	}
}

func TestModelsListsLiveWorkers(t *testing.T) {
	f := newFixture(t, nil)
	resp, body := f.do("GET", "/v1/models", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	jsonEqual(t, body, map[string]any{"object": "list", "data": []any{}})

	f.putWorker("w1", "stories260K", schemas.WorkerReady)
	f.putWorker("w2", "stories260K", schemas.WorkerStarting)
	f.putWorker("w3", "llama3:8b", schemas.WorkerReady)
	f.putWorker("w4", "gone", schemas.WorkerReady)
	f.deleteWorker("w4")
	kv, err := f.js.KeyValue(f.ctx(), f.subj.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(f.ctx(), "junk", []byte("not json")); err != nil {
		t.Fatal(err)
	}

	// The queen mirrors the bucket through a watch: the changes reach it
	// soon after they are made, not at once.
	checkFor(t, func() error {
		_, body = f.do("GET", "/v1/models", "")
		data, _ := body["data"].([]any)
		var ids []string
		for _, m := range data {
			id, _ := m.(map[string]any)["id"].(string)
			ids = append(ids, id)
		}
		if !slices.Equal(ids, []string{"llama3:8b", "stories260K"}) {
			return fmt.Errorf("models %v", ids)
		}
		return nil
	})
	created := f.q.started.Unix()
	jsonEqual(t, body, map[string]any{"object": "list", "data": []any{
		map[string]any{"id": "llama3:8b", "object": "model", "created": created, "owned_by": "rbee"},
		map[string]any{"id": "stories260K", "object": "model", "created": created, "owned_by": "rbee"},
	}})
}

func TestHealthAndReadiness(t *testing.T) {
	f := newFixture(t, nil)
	if resp, body := f.do("GET", "/healthz", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz %d %v", resp.StatusCode, body)
	}
	if resp, body := f.do("GET", "/readyz", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz %d %v", resp.StatusCode, body)
	}

	f.srv.Shutdown()
	f.srv.WaitForShutdown()
	resp, body := f.do("GET", "/readyz", "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d with the server gone, want 503", resp.StatusCode)
	}
	if e := body["error"].(map[string]any); e["code"] != string(schemas.CodeBusUnavailable) {
		t.Errorf("error %v", e)
	}
	if resp, _ := f.do("GET", "/healthz", ""); resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz %d: the process is alive", resp.StatusCode)
	}
}

func TestReadyzWithoutJobsStream(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.js.DeleteStream(f.ctx(), f.subj.JobsStream()); err != nil {
		t.Fatal(err)
	}
	resp, body := f.do("GET", "/readyz", "")
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz %d without the jobs stream, want 503", resp.StatusCode)
	}
	msg, _ := body["error"].(map[string]any)["message"].(string)
	if !strings.Contains(msg, f.subj.JobsStream()) {
		t.Errorf("message %q does not name the stream", msg)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	nc := &nats.Conn{}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Subjects: schemas.Subjects{Prefix: "a.b"}}, "prefix"},
		{Config{FirstTokenTimeout: -time.Second}, "first token timeout"},
		{Config{IdleTimeout: -time.Second}, "idle timeout"},
		{Config{DefaultMaxTokens: -1}, "default max tokens"},
	} {
		if _, err := New(nc, tc.cfg, nil, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
	if _, err := New(nil, Config{}, nil, nil); err == nil {
		t.Error("New with a nil connection succeeded")
	}
}

// The KV lookup and the job on the queue use the subjects under the
// configured prefix, not the default one.
func TestCustomPrefix(t *testing.T) {
	f := newFixture(t, nil)
	subj, err := schemas.NewSubjects("other")
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Provision(f.ctx(), f.js, subj, bus.Provisioning{}); err != nil {
		t.Fatal(err)
	}
	f.putWorker("w1", model, schemas.WorkerReady) // under the default prefix only
	q, err := New(f.nc, Config{Subjects: subj}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	err = q.checkModel(f.ctx(), model)
	if got := wireError(err).Code; got != schemas.CodeModelNotFound {
		t.Errorf("checkModel under prefix other: %v, want model_not_found", err)
	}
	job := schemas.Job{ID: "j1", Model: model, Stream: "rbee.v2.stream.q.j1", Prompt: "x"}
	if err := q.enqueue(f.ctx(), &job); err != nil {
		t.Fatal(err)
	}
	info, err := f.js.Stream(f.ctx(), subj.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if info.CachedInfo().State.Msgs != 1 {
		t.Errorf("%s holds %d jobs, want 1", subj.JobsStream(), info.CachedInfo().State.Msgs)
	}
}

// With no stream to answer, queueing retries until the request's context
// ends, then reports the bus as unavailable.
func TestEnqueueWithoutStream(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.js.DeleteStream(f.ctx(), f.subj.JobsStream()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(f.ctx(), 300*time.Millisecond)
	defer cancel()
	job := schemas.Job{ID: "j1", Model: model, Stream: "rbee.v2.stream.q.j1", Prompt: "x"}
	err := f.q.enqueue(ctx, &job)
	if got := wireError(err).Code; got != schemas.CodeBusUnavailable {
		t.Errorf("enqueue without a stream: %v, want bus_unavailable", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap the deadline", err)
	}
}

func TestJobIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newJobID()
		if !schemas.ValidID(id) || strings.ContainsAny(id, "/+=") {
			t.Fatalf("job ID %q is not a valid URL-safe ID", id)
		}
		if seen[id] {
			t.Fatalf("job ID %q repeated", id)
		}
		seen[id] = true
	}
}

// A model a live hive serves but no live worker does (its worker is
// starting or restarting) is 503, not 404.
func TestModelOfALiveHiveWithoutWorkerIs503(t *testing.T) {
	f := newFixture(t, nil)
	kv, err := f.js.KeyValue(f.ctx(), f.subj.HivesBucket())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(schemas.HiveHeartbeat{HiveID: "h1", CPUs: 2, Workers: []string{}, Models: []string{model}, Time: time.Now()})
	if _, err := kv.Put(f.ctx(), "h1", data); err != nil {
		t.Fatal(err)
	}
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"x"}`)
	if resp.StatusCode != http.StatusServiceUnavailable || errorCode(body) != string(schemas.CodeNoCapacity) ||
		!strings.Contains(fmt.Sprint(body), "h1") {
		t.Errorf("a served model with no live worker: %d %v, want 503 no_capacity naming the hive", resp.StatusCode, body)
	}
	resp, body = f.post("/v1/completions", `{"model":"gpt-9","prompt":"x"}`)
	if resp.StatusCode != http.StatusNotFound || errorCode(body) != string(schemas.CodeModelNotFound) {
		t.Errorf("a model nobody serves: %d %v, want 404", resp.StatusCode, body)
	}
}

// Admission follows the workers bucket through the queen's one watch: a
// worker counts as soon as its heartbeat is put and stops counting as soon
// as its key goes, or once its heartbeat is older than WorkerStaleAfter.
func TestRegistryFollowsTheBucket(t *testing.T) {
	f := newFixture(t, nil)
	if err := f.q.checkModel(f.ctx(), model); wireError(err).Code != schemas.CodeModelNotFound {
		t.Fatalf("no worker yet: %v", err)
	}
	f.putWorker("w1", model, schemas.WorkerReady)
	checkFor(t, func() error { return f.q.checkModel(f.ctx(), model) })
	f.putWorker("w1", model, schemas.WorkerDraining)
	checkFor(t, func() error {
		if err := f.q.checkModel(f.ctx(), model); wireError(err).Code != schemas.CodeNoCapacity {
			return fmt.Errorf("only a draining worker: %v, want no_capacity", err)
		}
		return nil
	})
	f.putWorker("w1", model, schemas.WorkerReady)
	checkFor(t, func() error { return f.q.checkModel(f.ctx(), model) })
	f.deleteWorker("w1")
	checkFor(t, func() error {
		if err := f.q.checkModel(f.ctx(), model); wireError(err).Code != schemas.CodeModelNotFound {
			return fmt.Errorf("the worker's key deleted: %v, want model_not_found", err)
		}
		return nil
	})
	f.putWorker("w1", model, schemas.WorkerReady)
	checkFor(t, func() error { return f.q.checkModel(f.ctx(), model) })
	now := time.Now().Add(DefaultWorkerStaleAfter + time.Second)
	f.q.now = func() time.Time { return now }
	if err := f.q.checkModel(f.ctx(), model); wireError(err).Code != schemas.CodeModelNotFound {
		t.Errorf("a heartbeat older than WorkerStaleAfter: %v, want model_not_found", err)
	}
}

// An unclean path gets the mux's redirect, counted under the route it leads
// to: endpoint labels are routes, never paths a client makes up.
func TestUncleanPathRedirects(t *testing.T) {
	f := newFixture(t, nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(f.http.URL + "/v1//models")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 3 || resp.Header.Get("Location") != "/v1/models" {
		t.Errorf("status %d Location %q, want a redirect to /v1/models", resp.StatusCode, resp.Header.Get("Location"))
	}
	wantMetric(t, f.scrape(), fmt.Sprintf(`rbee_queen_requests_total{code="%d",endpoint="GET /v1/models"} 1`, resp.StatusCode))
}

// postHeader posts body with one extra header and decodes the answer.
func (f *fixture) postHeader(path, body, key, value string) (*http.Response, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.ctx(), http.MethodPost, f.http.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(key, value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		f.t.Fatalf("body: %v", err)
	}
	return resp, v
}

func errorCode(body map[string]any) any {
	e, _ := body["error"].(map[string]any)
	return e["code"]
}

// A deadline already past is refused before anything is queued.
func TestDeadlineInThePast(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", model, schemas.WorkerReady)
	resp, body := f.postHeader("/v1/completions", `{"model":"stories260K","prompt":"x"}`,
		HeaderDeadline, time.Now().Add(-time.Second).Format(time.RFC3339Nano))
	if resp.StatusCode != http.StatusGatewayTimeout || errorCode(body) != string(schemas.CodeDeadlineExceeded) {
		t.Errorf("status %d, body %v: want 504 deadline_exceeded", resp.StatusCode, body)
	}
	if n := f.jobsQueued(); n != 0 {
		t.Errorf("%d jobs queued for a request past its deadline", n)
	}
	resp, body = f.postHeader("/v1/completions", `{"model":"stories260K","prompt":"x"}`, HeaderDeadline, "tomorrow")
	if resp.StatusCode != http.StatusBadRequest || errorCode(body) != string(schemas.CodeInvalidRequest) {
		t.Errorf("status %d, body %v: want 400 invalid_request for an unreadable deadline", resp.StatusCode, body)
	}
}

// A deadline that passes while the job waits answers 504 at the deadline,
// and cancels the job so no worker starts it later.
func TestDeadlinePassesWhileQueued(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", model, schemas.WorkerReady) // alive, but it never pulls
	cancels := f.subscribeCancel()
	deadline := time.Now().Add(300 * time.Millisecond)
	resp, body := f.postHeader("/v1/completions", `{"model":"stories260K","prompt":"x"}`, HeaderDeadline, deadline.Format(time.RFC3339Nano))
	if resp.StatusCode != http.StatusGatewayTimeout || errorCode(body) != string(schemas.CodeDeadlineExceeded) {
		t.Errorf("status %d, body %v: want 504 deadline_exceeded", resp.StatusCode, body)
	}
	if time.Now().Before(deadline) {
		t.Error("answered before the deadline")
	}
	if _, err := cancels.NextMsg(waitFor); err != nil {
		t.Errorf("no cancel after the deadline: %v", err)
	}
}

// A job the queen stops following before any worker took it still ends in
// one terminal state, recorded in its stream: expired after its deadline,
// cancelled when its client left.
func TestQueuedJobsEndInARecordedState(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", model, schemas.WorkerReady) // alive, but it never pulls
	deadline := time.Now().Add(300 * time.Millisecond)
	resp, _ := f.postHeader("/v1/completions", `{"model":"stories260K","prompt":"x"}`, HeaderDeadline, deadline.Format(time.RFC3339Nano))
	expired := resp.Header.Get("X-Rbee-Job-Id")
	st, err := bus.ReadJob(f.ctx(), f.js, f.subj, expired)
	if err != nil || st.State != schemas.JobExpired || st.Events != 1 || st.Error.Code != schemas.CodeDeadlineExceeded {
		t.Errorf("record of the job that expired queued: %+v, %v", st, err)
	}

	// Headers come with the first event, so the job's ID is read from the
	// queue.
	ctx, hangUp := context.WithCancel(f.ctx())
	defer hangUp()
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.http.URL+"/v1/completions", strings.NewReader(`{"model":"stories260K","prompt":"y","stream":true}`))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	var left string
	checkFor(t, func() error {
		stream, err := f.js.Stream(f.ctx(), f.subj.JobsStream())
		if err != nil {
			return err
		}
		msg, err := stream.GetLastMsgForSubject(f.ctx(), f.subj.Jobs(model))
		if err != nil {
			return err
		}
		var j schemas.Job
		if err := json.Unmarshal(msg.Data, &j); err != nil || j.Prompt != "y" {
			return fmt.Errorf("queued %s: %v", msg.Data, err)
		}
		left = j.ID
		return nil
	})
	hangUp()
	<-gone
	checkFor(t, func() error {
		st, err := bus.ReadJob(f.ctx(), f.js, f.subj, left)
		if err != nil || st.State != schemas.JobCancelled || st.Events != 1 {
			return fmt.Errorf("record of the job whose client left: %+v, %v", st, err)
		}
		return nil
	})
}

// A timeout in the request body becomes the job's deadline.
func TestTimeoutBecomesDeadline(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say("a"))
	resp, _ := f.post("/v1/completions", `{"model":"stories260K","prompt":"x","timeout":30}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	j := recvJob(t, taken)
	if d := j.Job.Deadline.Sub(j.Job.CreatedAt); d != 30*time.Second {
		t.Errorf("deadline %v after creation, want 30s", d)
	}
	if j.Job.Seed == nil {
		t.Error("the queen gave the job no seed")
	}
}

// A worker that stops a job at its deadline: 504 for a plain request, an
// error event and the stream's end for a streaming one.
func TestDeadlineMidStream(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, func(j *fakeJob) {
		j.token("Once")
		j.fail(schemas.CodeDeadlineExceeded, "the job's deadline passed")
	})
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"x"}`)
	if resp.StatusCode != http.StatusGatewayTimeout || errorCode(body) != string(schemas.CodeDeadlineExceeded) {
		t.Errorf("status %d, body %v: want 504 deadline_exceeded", resp.StatusCode, body)
	}
	events := f.stream(`{"model":"stories260K","messages":[{"role":"user","content":"x"}],"stream":true}`)
	if n := len(events); n < 3 || events[n-1] != "[DONE]" || !strings.Contains(events[n-2], string(schemas.CodeDeadlineExceeded)) {
		t.Errorf("stream %q: want an error event with deadline_exceeded, then [DONE]", events)
	}
}

// DELETE /v1/jobs/{id} records the cancel, for a running or a queued job.
func TestCancelEndpoint(t *testing.T) {
	f := newFixture(t, nil)
	cancels := f.subscribeCancel()
	resp, body := f.do(http.MethodDelete, "/v1/jobs/job-7", "")
	if resp.StatusCode != http.StatusAccepted || body["id"] != "job-7" {
		t.Errorf("status %d, body %v: want 202 for job-7", resp.StatusCode, body)
	}
	expectCancel(t, cancels, f.subj.CancelKey("job-7"))
	if resp, _ := f.do(http.MethodDelete, "/v1/jobs/a.b", ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a job ID with a dot: status %d, want 400", resp.StatusCode)
	}
}

// GET /v1/jobs/{id} answers the job's record from its events.
func TestJobEndpoint(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, say("Once", " upon"))
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"x"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	id := resp.Header.Get("X-Rbee-Job-Id")
	resp, rec := f.do(http.MethodGet, "/v1/jobs/"+id, "")
	if resp.StatusCode != http.StatusOK || rec["state"] != string(schemas.JobDone) || rec["text"] != "Once upon" ||
		rec["id"] != id || rec["owner"] != f.q.cfg.ID {
		t.Errorf("status %d, record %v", resp.StatusCode, rec)
	}
	if resp, body := f.do(http.MethodGet, "/v1/jobs/no-such-job", ""); resp.StatusCode != http.StatusNotFound || errorCode(body) != string(schemas.CodeNotFound) {
		t.Errorf("unknown job: status %d, %v", resp.StatusCode, body)
	}
	if resp, _ := f.do(http.MethodGet, "/v1/jobs/a*", ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a wildcard ID: status %d, want 400", resp.StatusCode)
	}
}

// jobsQueued is the number of jobs in the work queue.
func (f *fixture) jobsQueued() uint64 {
	f.t.Helper()
	s, err := f.js.Stream(f.ctx(), f.subj.JobsStream())
	if err != nil {
		f.t.Fatal(err)
	}
	info, err := s.Info(f.ctx())
	if err != nil {
		f.t.Fatal(err)
	}
	return info.State.Msgs
}

// Requests with one Idempotency-Key run one job: a repeat while it runs and
// one after it ended both get its answer, under its job ID.
func TestIdempotencyKeyRunsOneJob(t *testing.T) {
	f := newFixture(t, nil)
	release, started := make(chan struct{}), make(chan string, 4)
	taken := f.startWorker(model, func(j *fakeJob) {
		started <- j.Job.ID
		j.token("Once")
		<-release
		j.token(" upon")
		j.end(schemas.StopReasonStop, schemas.Usage{PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3})
	})
	body := `{"model":"stories260K","prompt":"x"}`
	type answer struct {
		resp *http.Response
		body map[string]any
	}
	answers := make(chan answer, 2)
	for range 2 {
		go func() {
			resp, v := f.postHeader("/v1/completions", body, HeaderIdempotencyKey, "order-1234")
			answers <- answer{resp, v}
		}()
	}
	var jobID string
	select {
	case jobID = <-started:
	case <-time.After(waitFor):
		t.Fatal("the fake worker took no job")
	}
	close(release)
	var ids []string
	for range 2 {
		a := <-answers
		if a.resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %v", a.resp.StatusCode, a.body)
		}
		text := a.body["choices"].([]any)[0].(map[string]any)["text"]
		if text != "Once upon" {
			t.Errorf("text %q, want the one job's", text)
		}
		ids = append(ids, a.resp.Header.Get("X-Rbee-Job-Id"))
	}
	resp, v := f.postHeader("/v1/completions", body, HeaderIdempotencyKey, "order-1234")
	if resp.StatusCode != http.StatusOK || v["choices"].([]any)[0].(map[string]any)["text"] != "Once upon" {
		t.Errorf("a repeat after the job ended: %d %v", resp.StatusCode, v)
	}
	ids = append(ids, resp.Header.Get("X-Rbee-Job-Id"))
	for _, id := range ids {
		if id != jobID {
			t.Errorf("X-Rbee-Job-Id %q, want the one job %q", id, jobID)
		}
	}
	recvJob(t, taken)
	select {
	case again := <-started:
		t.Errorf("a second job %s ran for the same idempotency key", again)
	default:
	}
}
