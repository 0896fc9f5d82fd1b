package queen

import (
	"net/http"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

const toolsBody = `,"tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],` +
	`"tool_choice":{"type":"function","function":{"name":"get_weather"}},"parallel_tool_calls":false`

// sayToolCall answers as a worker does when the model called a tool: the
// call's text as tokens, then the parsed call on the end event.
func sayToolCall(j *fakeJob) {
	j.token("<tool_call>\n")
	j.token(`{"name": "get_weather", "arguments": {"city": "Paris"}}`)
	usage := schemas.Usage{PromptTokens: 9, CompletionTokens: 2, TotalTokens: 11}
	j.emit(schemas.Event{Type: schemas.EventEnd, StopReason: schemas.StopReasonToolCalls, Usage: &usage,
		ToolCalls: []schemas.ToolCall{{ID: "call_x_0", Name: "get_weather", Arguments: `{"city":"Paris"}`}}})
}

func TestToolCalls(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, sayToolCall)
	resp, v := f.post("/v1/chat/completions", chatWith(toolsBody))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %v", resp.StatusCode, v)
	}
	j := recvJob(t, taken)
	if len(j.Job.Tools) != 1 || j.Job.Tools[0].Name != "get_weather" || j.Job.ToolChoice != schemas.ToolChoiceFunction ||
		j.Job.ToolName != "get_weather" || j.Job.ParallelToolCalls == nil || *j.Job.ParallelToolCalls {
		t.Errorf("job's tool use %+v", j.Job.ToolUse)
	}
	choice := v["choices"].([]any)[0].(map[string]any)
	jsonEqual(t, choice, map[string]any{
		"index": 0, "finish_reason": "tool_calls", "logprobs": nil,
		"message": map[string]any{"role": "assistant", "tool_calls": []any{map[string]any{
			"id": "call_x_0", "type": "function", "function": map[string]any{"name": "get_weather", "arguments": `{"city":"Paris"}`}}}},
	})

	// Streamed: the role, the call's id, type and name, its arguments,
	// then finish_reason tool_calls; no content deltas.
	events := f.stream(chatWith(toolsBody + `,"stream":true`))
	recvJob(t, taken)
	var deltas []any
	for _, ev := range events[:len(events)-1] {
		deltas = append(deltas, decodeObject(t, ev)["choices"].([]any)[0])
	}
	jsonEqual(t, deltas, []any{
		map[string]any{"index": 0, "delta": map[string]any{"role": "assistant", "content": ""}, "finish_reason": nil, "logprobs": nil},
		map[string]any{"index": 0, "delta": map[string]any{"tool_calls": []any{map[string]any{"index": 0, "id": "call_x_0", "type": "function",
			"function": map[string]any{"name": "get_weather", "arguments": ""}}}}, "finish_reason": nil, "logprobs": nil},
		map[string]any{"index": 0, "delta": map[string]any{"tool_calls": []any{map[string]any{"index": 0,
			"function": map[string]any{"arguments": `{"city":"Paris"}`}}}}, "finish_reason": nil, "logprobs": nil},
		map[string]any{"index": 0, "delta": map[string]any{}, "finish_reason": "tool_calls", "logprobs": nil},
	})

	// The conversation goes on with the call and the tool's answer.
	resp, v = f.post("/v1/chat/completions", `{"model":"stories260K","messages":[{"role":"user","content":"Weather?"},`+
		`{"role":"assistant","content":null,"tool_calls":[{"id":"call_x_0","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},`+
		`{"role":"tool","tool_call_id":"call_x_0","content":"21 C"}]`+toolsBody+`}`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %v", resp.StatusCode, v)
	}
	j = recvJob(t, taken)
	if m := j.Job.Messages; len(m) != 3 || len(m[1].ToolCalls) != 1 || m[1].ToolCalls[0].Arguments != `{"city":"Paris"}` || m[2].ToolCallID != "call_x_0" {
		t.Errorf("messages %+v", m)
	}
}

// A streamed answer to a request with tools that is no call comes whole
// at the end, as one content delta with its logprobs.
func TestToolsAnswerWithoutACall(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, sayWithLogprobs)
	events := f.stream(chatWith(`,"tools":[{"type":"function","function":{"name":"f"}}],"logprobs":true,"stream":true`))
	recvJob(t, taken)
	var text string
	tokens := 0
	for _, ev := range events[:len(events)-1] {
		c := decodeObject(t, ev)["choices"].([]any)[0].(map[string]any)
		if s, ok := c["delta"].(map[string]any)["content"].(string); ok {
			text += s
		}
		if lp, ok := c["logprobs"].(map[string]any); ok {
			tokens += len(lp["content"].([]any))
		}
		if r, ok := c["finish_reason"].(string); ok && r != "length" {
			t.Errorf("finish_reason %q, want length", r)
		}
	}
	if text != " Once\ufffd" || tokens != 2 {
		t.Errorf("content %q with %d tokens' logprobs, want \" Once\" and half a character, 2", text, tokens)
	}
}
