package queen

import (
	"bufio"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

// readNDJSON reads an Ollama stream: one JSON object a line.
func readNDJSON(t *testing.T, resp *http.Response) []map[string]any {
	t.Helper()
	defer resp.Body.Close()
	var lines []map[string]any
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, v)
	}
	return lines
}

func TestOllamaGenerateStreamsNDJSON(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say("Once", " upon"))
	resp := f.open(f.ctx(), f.http.URL+"/api/generate",
		`{"model":"`+model+`","prompt":"Hi","options":{"temperature":0.5,"num_predict":7,"stop":["\n"],"seed":3}}`)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	lines := readNDJSON(t, resp)
	job := recvJob(t, taken).Job
	if job.Prompt != "Hi" || job.MaxTokens != 7 || len(job.Stop) != 1 || *job.Temperature != 0.5 || *job.Seed != 3 {
		t.Errorf("job %+v, want the options mapped", job)
	}
	if len(lines) != 3 || lines[0]["response"] != "Once" || lines[1]["response"] != " upon" || lines[0]["done"] != false {
		t.Fatalf("lines %v, want two tokens then the end", lines)
	}
	last := lines[2]
	if last["done"] != true || last["done_reason"] != "stop" || last["eval_count"] != 2.0 || last["prompt_eval_count"] != 5.0 ||
		last["model"] != model || last["created_at"] == nil {
		t.Errorf("last line %v", last)
	}
}

func TestOllamaChatWithoutStream(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say("Hello", "!"))
	resp, body := f.post("/api/chat", `{"model":"`+model+`","stream":false,"format":"json",
		"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	msg, _ := body["message"].(map[string]any)
	if msg["role"] != "assistant" || msg["content"] != "Hello!" || body["done"] != true {
		t.Errorf("answer %v", body)
	}
	job := recvJob(t, taken).Job
	if len(job.Messages) != 2 || job.Messages[0].Role != "system" || job.ResponseFormat == nil ||
		job.ResponseFormat.Type != schemas.FormatJSONObject {
		t.Errorf("job %+v, want both messages and a JSON format", job)
	}
}

func TestOllamaFormatSchemaAndSystemPrompt(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say("{}"))
	resp, body := f.post("/api/generate", `{"model":"`+model+`","stream":false,"system":"Answer in JSON.","prompt":"Hi",
		"format":{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}}`)
	if resp.StatusCode != http.StatusOK || body["response"] != "{}" {
		t.Fatalf("status %d: %v", resp.StatusCode, body)
	}
	job := recvJob(t, taken).Job
	if f := job.ResponseFormat; f == nil || f.Type != schemas.FormatJSONSchema || f.JSONSchema == nil || len(f.JSONSchema.Schema) == 0 {
		t.Errorf("format %+v, want the schema", job.ResponseFormat)
	}
	if len(job.Messages) != 2 || job.Messages[0].Content != "Answer in JSON." || job.Prompt != "" {
		t.Errorf("job %+v, want the system prompt and the prompt as messages", job)
	}
}

// What rbee cannot honour is refused by name in Ollama's error shape, never
// ignored.
func TestOllamaRefusesWhatItCannotHonour(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", model, schemas.WorkerReady)
	for _, body := range []string{
		`{"model":"` + model + `","prompt":"Hi","options":{"num_ctx":8192}}`,
		`{"model":"` + model + `","prompt":"Hi","options":{"mirostat":2}}`,
		`{"model":"` + model + `","prompt":"Hi","options":{"no_such_option":1}}`,
		`{"model":"` + model + `","prompt":"Hi","suffix":"end"}`,
		`{"model":"` + model + `","prompt":"Hi","images":["aGk="]}`,
		`{"model":"` + model + `","prompt":"Hi","think":true}`,
		`{"model":"` + model + `","prompt":"Hi","format":"yaml"}`,
		`{"model":"` + model + `","prompt":"Hi","no_such_field":1}`,
		`{"model":"` + model + `","prompt":""}`,
		`{"model":"` + model + `","prompt":"Hi","options":{"temperature":3}}`,
		`{"model":"` + model + `","prompt":"a\u0000b"}`,
	} {
		resp, got := f.post("/api/generate", body)
		code, _ := got["code"].(string)
		if resp.StatusCode != http.StatusBadRequest || got["error"] == "" ||
			(code != string(schemas.CodeInvalidRequest) && code != string(schemas.CodeUnsupportedParameter)) {
			t.Errorf("%s: status %d, %v, want 400 with an error", body, resp.StatusCode, got)
		}
		if strings.Contains(got["error"].(string), "unsupported parameter") != (code == string(schemas.CodeUnsupportedParameter)) {
			t.Errorf("%s: %v: an unsupported parameter's refusal has its own code", body, got)
		}
	}
	resp, got := f.post("/api/chat", `{"model":"`+model+`","messages":[{"role":"user","content":"Hi"}],"tools":[{"type":"function"}]}`)
	if resp.StatusCode != http.StatusBadRequest || got["error"] == "" {
		t.Errorf("chat with tools: status %d, %v", resp.StatusCode, got)
	}
	resp, got = f.post("/api/generate", `{"model":"nope","prompt":"Hi"}`)
	if resp.StatusCode != http.StatusNotFound || got["code"] != string(schemas.CodeModelNotFound) {
		t.Errorf("unknown model: status %d, %v", resp.StatusCode, got)
	}
}

func TestOllamaModelRoutes(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", model, schemas.WorkerReady)
	for _, path := range []string{"/api/tags", "/api/ps"} {
		resp, body := f.do(http.MethodGet, path, "")
		models, _ := body["models"].([]any)
		if resp.StatusCode != http.StatusOK || len(models) != 1 {
			t.Fatalf("%s: status %d, %v", path, resp.StatusCode, body)
		}
		m := models[0].(map[string]any)
		details, _ := m["details"].(map[string]any)
		if m["name"] != model || m["model"] != model || details["format"] != "gguf" {
			t.Errorf("%s: model %v", path, m)
		}
	}
	resp, body := f.post("/api/show", `{"model":"`+model+`"}`)
	if resp.StatusCode != http.StatusOK || body["details"] == nil {
		t.Errorf("show: status %d, %v", resp.StatusCode, body)
	}
	resp, body = f.post("/api/show", `{"model":"nope"}`)
	if resp.StatusCode != http.StatusNotFound || body["error"] == "" {
		t.Errorf("show unknown: status %d, %v", resp.StatusCode, body)
	}
	resp, body = f.do(http.MethodGet, "/api/version", "")
	if resp.StatusCode != http.StatusOK || body["version"] != ServiceVersion {
		t.Errorf("version: status %d, %v", resp.StatusCode, body)
	}
}

func TestRetrieveOneModel(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", model, schemas.WorkerReady)
	resp, body := f.do(http.MethodGet, "/v1/models/"+model, "")
	if resp.StatusCode != http.StatusOK || body["id"] != model || body["object"] != "model" {
		t.Errorf("retrieve: status %d, %v", resp.StatusCode, body)
	}
	resp, body = f.do(http.MethodGet, "/v1/models/nope", "")
	e, _ := body["error"].(map[string]any)
	if resp.StatusCode != http.StatusNotFound || e["code"] != string(schemas.CodeModelNotFound) {
		t.Errorf("retrieve unknown: status %d, %v", resp.StatusCode, body)
	}
}
