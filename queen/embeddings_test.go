package queen

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

// answer is a fake worker's script that ends each job with ev's results.
func answer(ev schemas.Event) func(*fakeJob) {
	return func(j *fakeJob) {
		ev.Type, ev.StopReason = schemas.EventEnd, schemas.StopReasonStop
		ev.Usage = &schemas.Usage{PromptTokens: 7, TotalTokens: 7}
		j.emit(ev)
	}
}

var vectors = [][]float32{{0.6, -0.8}, {1, 0}}

func TestEmbeddingsFloatAndBase64(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, answer(schemas.Event{Embeddings: vectors}))
	resp, body := f.post("/v1/embeddings", `{"model":"`+model+`","input":["a cat","a dog"],"user":"u1"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	job := recvJob(t, taken).Job
	if job.Kind != schemas.KindEmbed || strings.Join(job.Input, "|") != "a cat|a dog" || job.Prompt != "" {
		t.Errorf("job %+v: want an embed job of the two inputs", job.Aux)
	}
	jsonEqual(t, body, map[string]any{"object": "list", "model": model,
		"data": []any{
			map[string]any{"object": "embedding", "index": 0, "embedding": []any{0.6, -0.8}},
			map[string]any{"object": "embedding", "index": 1, "embedding": []any{1, 0}},
		},
		"usage": map[string]any{"prompt_tokens": 7, "total_tokens": 7}})
	if resp.Header.Get("X-Rbee-Job-Id") != job.ID || resp.Header.Get("X-Rbee-Worker-Id") != "fake-worker" {
		t.Errorf("headers %v", resp.Header)
	}

	resp, body = f.post("/v1/embeddings", `{"model":"`+model+`","input":"a cat","encoding_format":"base64"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	if job := recvJob(t, taken).Job; len(job.Input) != 1 || job.Input[0] != "a cat" {
		t.Errorf("a string input: job input %q", job.Input)
	}
	data := body["data"].([]any)
	raw, err := base64.StdEncoding.DecodeString(data[1].(map[string]any)["embedding"].(string))
	if err != nil || len(raw) != 8 {
		t.Fatalf("base64 embedding: %d bytes, %v", len(raw), err)
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4:])); got != 0 {
		t.Errorf("second value %v, want 0", got)
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(raw)); got != 1 {
		t.Errorf("first value %v, want 1", got)
	}
}

func TestEmbeddingsRefusals(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", model, schemas.WorkerReady)
	for _, c := range []struct{ body, names string }{
		{`{"model":"` + model + `","input":"a","dimensions":8}`, "unsupported parameter dimensions"},
		{`{"model":"` + model + `","input":[1,2,3]}`, "unsupported parameter input as token arrays"},
		{`{"model":"` + model + `","input":[[1,2]]}`, "unsupported parameter input as token arrays"},
		{`{"model":"` + model + `","input":"a","encoding_format":"int8"}`, "encoding_format"},
		{`{"model":"` + model + `","input":"a","temperature":1}`, "temperature"},
		{`{"model":"` + model + `"}`, "input is missing"},
		{`{"model":"` + model + `","input":[]}`, "input is empty"},
		{`{"model":"` + model + `","input":["a",""]}`, "input[1] is empty"},
		{`{"model":"` + model + `","input":"a\u0000"}`, "input[0]"},
	} {
		resp, body := f.post("/v1/embeddings", c.body)
		e, _ := body["error"].(map[string]any)
		want := schemas.CodeInvalidRequest
		if strings.HasPrefix(c.names, "unsupported parameter") {
			want = schemas.CodeUnsupportedParameter
		}
		if resp.StatusCode != http.StatusBadRequest || e["code"] != string(want) || !strings.Contains(e["message"].(string), c.names) {
			t.Errorf("%s: status %d, %v; want 400 %s naming %s", c.body, resp.StatusCode, body, want, c.names)
		}
	}
}

// TestEmbeddingsWorkerError: a worker's refusal reaches the client with
// its code and status.
func TestEmbeddingsWorkerError(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, func(j *fakeJob) { j.fail(schemas.CodeTooLarge, "send at most 1020 inputs") })
	resp, body := f.post("/v1/embeddings", `{"model":"`+model+`","input":"a"}`)
	if e, _ := body["error"].(map[string]any); resp.StatusCode != http.StatusRequestEntityTooLarge || e["code"] != string(schemas.CodeTooLarge) {
		t.Errorf("status %d, %v; want 413 request_too_large", resp.StatusCode, body)
	}
}

func TestOllamaEmbed(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, answer(schemas.Event{Embeddings: vectors}))
	resp, body := f.post("/api/embed", `{"model":"`+model+`","input":["a","b"],"keep_alive":"5m"}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	if job := recvJob(t, taken).Job; job.Kind != schemas.KindEmbed || !job.Truncate || len(job.Input) != 2 {
		t.Errorf("job %+v: want an embed job that truncates (Ollama's default)", job.Aux)
	}
	if body["model"] != model || body["prompt_eval_count"] != 7.0 || body["total_duration"].(float64) <= 0 {
		t.Errorf("body %v", body)
	}
	jsonEqual(t, body["embeddings"], []any{[]any{0.6, -0.8}, []any{1, 0}})

	f.post("/api/embed", `{"model":"`+model+`","input":"a","truncate":false}`)
	if job := recvJob(t, taken).Job; job.Truncate {
		t.Error("truncate false: the job truncates")
	}
	for _, c := range []struct{ body, names string }{
		{`{"model":"` + model + `","input":"a","options":{"temperature":0}}`, "options.temperature"},
		{`{"model":"` + model + `","input":"a","dimensions":4}`, "dimensions"},
		{`{"model":"` + model + `","input":"a","prompt":"b"}`, "prompt"},
	} {
		resp, body := f.post("/api/embed", c.body)
		if msg, _ := body["error"].(string); resp.StatusCode != http.StatusBadRequest || !strings.Contains(msg, c.names) {
			t.Errorf("%s: status %d, %v; want 400 naming %s", c.body, resp.StatusCode, body, c.names)
		}
	}
}

func TestTokenizeAndDetokenize(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, func(j *fakeJob) {
		switch j.Job.Kind {
		case schemas.KindTokenize:
			answer(schemas.Event{Tokens: []int32{1, 400}, Pieces: []string{"<s>", " Once"}})(j)
		default:
			answer(schemas.Event{Content: "Once"})(j)
		}
	})
	// Without a model: the one live workers serve.
	waitLiveModels(t, f, 1)
	resp, body := f.post("/tokenize", `{"content":"Once","add_special":true}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	jsonEqual(t, body, map[string]any{"tokens": []any{1, 400}})
	job := recvJob(t, taken).Job
	if job.Model != model || job.Kind != schemas.KindTokenize || job.Prompt != "Once" || !job.AddSpecial || !job.ParseSpecial || job.WithPieces {
		t.Errorf("job %+v %+v: want a tokenize job with add_special and llama.cpp's parse_special default", job.Prompt, job.Aux)
	}
	_, body = f.post("/tokenize", `{"model":"`+model+`","content":"Once","with_pieces":true,"parse_special":false}`)
	jsonEqual(t, body, map[string]any{"tokens": []any{map[string]any{"id": 1, "piece": "<s>"}, map[string]any{"id": 400, "piece": " Once"}}})
	if job := recvJob(t, taken).Job; job.ParseSpecial || !job.WithPieces {
		t.Errorf("job %+v: want parse_special off and with_pieces", job.Aux)
	}
	_, body = f.post("/detokenize", `{"tokens":[400]}`)
	jsonEqual(t, body, map[string]any{"content": "Once"})
	if job := recvJob(t, taken).Job; job.Kind != schemas.KindDetokenize || len(job.Tokens) != 1 || job.Tokens[0] != 400 {
		t.Errorf("job %+v: want a detokenize job of [400]", job.Aux)
	}

	for _, c := range []struct{ path, body, names string }{
		{"/detokenize", `{"tokens":[-1]}`, "tokens[0]"},
		{"/tokenize", `{"content":"a","with_pieces":true,"extra":1}`, "extra"},
	} {
		resp, body := f.post(c.path, c.body)
		e, _ := body["error"].(map[string]any)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(e["message"].(string), c.names) {
			t.Errorf("%s %s: status %d, %v; want 400 naming %s", c.path, c.body, resp.StatusCode, body, c.names)
		}
	}
	f.putWorker("w2", "other", schemas.WorkerReady)
	waitLiveModels(t, f, 2)
	resp, body = f.post("/tokenize", `{"content":"a"}`)
	if e, _ := body["error"].(map[string]any); resp.StatusCode != http.StatusBadRequest || !strings.Contains(e["message"].(string), "model is required") {
		t.Errorf("two models, none named: status %d, %v", resp.StatusCode, body)
	}
}

// waitLiveModels waits until the queen's registry has seen n live models.
func waitLiveModels(t *testing.T, f *fixture, n int) {
	t.Helper()
	checkFor(t, func() error {
		models, err := f.q.visibleModels(f.ctx())
		if err != nil {
			return err
		}
		if len(models) != n {
			return fmt.Errorf("%d models, want %d", len(models), n)
		}
		return nil
	})
}

// TestMicroTokenize: the queen's micro service takes the other kinds too,
// so a bus client tokenizes with nats req rbee.v2.infer and reads the one
// end event.
func TestMicroTokenize(t *testing.T) {
	f := newFixture(t, nil)
	f.run()
	taken := f.startWorker(model, answer(schemas.Event{Tokens: []int32{1, 403}}))
	msgs := f.infer(`{"model":"stories260K","kind":"tokenize","prompt":"Once","add_special":true}`)
	if job := recvJob(t, taken).Job; job.Kind != schemas.KindTokenize || job.Prompt != "Once" || !job.AddSpecial {
		t.Errorf("job %+v: want the tokenize job", job.Aux)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want the end event", len(msgs))
	}
	var ev schemas.Event
	if err := json.Unmarshal(msgs[0].Data, &ev); err != nil || ev.Type != schemas.EventEnd || len(ev.Tokens) != 2 || ev.Tokens[1] != 403 {
		t.Errorf("event %s: %v", msgs[0].Data, err)
	}
}

// FuzzEmbedInput feeds arbitrary bodies to the embeddings requests'
// decoding: no panic, and every refusal, or the job it maps to, is
// invalid_request at worst.
func FuzzEmbedInput(f *testing.F) {
	for _, seed := range []string{`{"model":"m","input":"a"}`, `{"model":"m","input":["a",""]}`, `{"model":"m","input":[[1],[2]]}`,
		`{"model":"m","input":[1,"a"]}`, `{"model":"m","input":null,"options":{"x":1}}`, `{"input":{"a":1}}`, `[]`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var oai embeddingsRequest
		if json.Unmarshal(body, &oai) == nil {
			if inputs, err := textInput(oai.Input); err != nil {
				if c := schemas.CodeOf(err); c != schemas.CodeInvalidRequest && c != schemas.CodeUnsupportedParameter {
					t.Fatalf("textInput: %v", err)
				}
			} else {
				checkAccepted(t, "embeddings", schemas.InferRequest{Model: oai.Model, Aux: schemas.Aux{Kind: schemas.KindEmbed, Input: inputs}})
			}
		}
		var oll ollamaEmbedRequest
		if json.Unmarshal(body, &oll) == nil {
			if ir, err := oll.inferRequest(); err == nil {
				checkAccepted(t, "ollama embed", ir)
			} else if c := schemas.CodeOf(err); c != schemas.CodeInvalidRequest && c != schemas.CodeUnsupportedParameter {
				t.Fatalf("ollama embed: %v", err)
			}
		}
	})
}
