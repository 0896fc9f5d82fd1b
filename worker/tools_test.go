package worker_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/infer/synth"
	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

var (
	weather = schemas.Tool{Name: "get_weather", Description: "The weather in a city",
		Parameters: json.RawMessage(`{"type":"object","properties":{"city":{"type":"string","minLength":1,"maxLength":10}},"required":["city"],"additionalProperties":false}`)}
	clock = schemas.Tool{Name: "now", Parameters: json.RawMessage(`{"type":"object","properties":{},"additionalProperties":false}`)}
)

// Tool calls end to end on a worker: the bundled model with Qwen2.5's
// real chat template (Hermes-style <tool_call> tags) gets the tools in
// its prompt; with tool_choice required or a named function its sampling
// is constrained to a valid call, which comes back parsed on the end event
// with stop reason tool_calls. A template that takes no tools refuses them.
func TestJobsWithToolCalls(t *testing.T) {
	tmpl, err := os.ReadFile("../infer/chat/testdata/qwen2.5-instruct.jinja")
	if err != nil {
		t.Fatal(err)
	}
	b := newBed(t)
	b.startWorkerOn(t, modelWithTemplate(t, string(tmpl)), worker.Config{ContextLength: 1024})
	msgs := []schemas.Message{{Role: "user", Content: "What is the weather in Paris?"}}
	one := 1.0
	for i, tc := range []struct {
		choice, name string
		want         string
	}{
		{schemas.ToolChoiceRequired, "", ""},
		{schemas.ToolChoiceFunction, "now", "now"},
		{schemas.ToolChoiceFunction, "get_weather", "get_weather"},
	} {
		seed := int64(i)
		job := schemas.Job{ID: "job-tools-" + string(rune('a'+i)), Messages: msgs, MaxTokens: 64,
			Sampling: schemas.Sampling{Temperature: &one, Seed: &seed},
			ToolUse:  schemas.ToolUse{Tools: []schemas.Tool{weather, clock}, ToolChoice: tc.choice, ToolName: tc.name}}
		events := drain(t, b.submit(t, job))
		end := wantEnd(t, events)
		if end.StopReason != schemas.StopReasonToolCalls || len(end.ToolCalls) != 1 {
			t.Fatalf("%s %s: end %+v, want one tool call", tc.choice, tc.name, end)
		}
		call := end.ToolCalls[0]
		var args map[string]any
		if err := json.Unmarshal([]byte(call.Arguments), &args); err != nil || (tc.want != "" && call.Name != tc.want) || call.ID == "" {
			t.Errorf("%s %s: call %+v (%v)", tc.choice, tc.name, call, err)
		}
		if city, ok := args["city"].(string); call.Name == "get_weather" && (!ok || city == "" || len(args) != 1) {
			t.Errorf("get_weather's arguments %v do not validate", args)
		}
		if call.Name == "now" && len(args) != 0 {
			t.Errorf("now's arguments %v, want none", args)
		}
	}

	// Tool messages and an assistant's calls in the history render.
	history := append(msgs, schemas.Message{Role: "assistant", ToolCalls: []schemas.ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
		schemas.Message{Role: "tool", ToolCallID: "call_1", Content: `{"temp":21}`})
	auto := schemas.Job{ID: "job-tools-auto", Messages: history, MaxTokens: 8, Sampling: greedy(),
		ToolUse: schemas.ToolUse{Tools: []schemas.Tool{weather}}}
	wantEnd(t, drain(t, b.submit(t, auto)))
	b.waitQueueEmpty(t)
}

func TestToolsNeedATemplateThatTakesThem(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{ContextLength: 256})
	job := schemas.Job{ID: "job-no-tools", Messages: []schemas.Message{{Role: "user", Content: "Hi"}}, MaxTokens: 4, Sampling: greedy(),
		ToolUse: schemas.ToolUse{Tools: []schemas.Tool{weather}, ToolChoice: schemas.ToolChoiceRequired}}
	events := drain(t, b.submit(t, job))
	wantError(t, events, schemas.CodeInvalidRequest)
	if !strings.Contains(events[len(events)-1].Error.Message, "takes no tools") {
		t.Errorf("error %+v", events[len(events)-1].Error)
	}
	b.waitQueueEmpty(t)
}

// TestToolCallsWithABPEModel: a synthetic model (random weights) with the
// GPT-2 byte-level BPE vocabulary and Qwen2.5's chat template: the tools
// render through the template, tool_choice required constrains even a
// model that knows nothing to a valid call, and the call is parsed.
func TestToolCallsWithABPEModel(t *testing.T) {
	tmpl, err := os.ReadFile("../infer/chat/testdata/qwen2.5-instruct.jinja")
	if err != nil {
		t.Fatal(err)
	}
	v, err := synth.ReadVocab("../infer/tokenizer/testdata/ggml-vocab-gpt-2.gguf")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := synth.Shape("tiny")
	if err != nil {
		t.Fatal(err)
	}
	spec.Name, spec.ChatTemplate = "toolbee", string(tmpl)
	path := filepath.Join(t.TempDir(), "toolbee.gguf")
	if err := synth.WriteFile(path, spec, synth.Q8_0, v); err != nil {
		t.Fatal(err)
	}
	model, err := infer.Load(path, infer.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { model.Close() })
	if model.ToolFormat() != chat.ToolsHermes {
		t.Fatalf("tool format %v, want hermes", model.ToolFormat())
	}
	b := newBed(t)
	b.startWorkerOn(t, model, worker.Config{ContextLength: 512})
	one, seed := 1.0, int64(3)
	job := schemas.Job{ID: "job-bpe-tools", Messages: []schemas.Message{{Role: "user", Content: "What is the weather in Paris?"}},
		MaxTokens: 64, Sampling: schemas.Sampling{Temperature: &one, Seed: &seed},
		ToolUse: schemas.ToolUse{Tools: []schemas.Tool{weather}, ToolChoice: schemas.ToolChoiceRequired}}
	end := wantEnd(t, drain(t, b.submit(t, job)))
	if end.StopReason != schemas.StopReasonToolCalls || len(end.ToolCalls) != 1 || end.ToolCalls[0].Name != "get_weather" {
		t.Fatalf("end %+v, want a get_weather call", end)
	}
	var args struct {
		City *string `json:"city"`
	}
	dec := json.NewDecoder(strings.NewReader(end.ToolCalls[0].Arguments))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&args); err != nil || args.City == nil || *args.City == "" || len(*args.City) > 10*4 {
		t.Errorf("arguments %q do not validate: %v", end.ToolCalls[0].Arguments, err)
	}
	t.Logf("call %+v", end.ToolCalls[0])
	b.waitQueueEmpty(t)
}
