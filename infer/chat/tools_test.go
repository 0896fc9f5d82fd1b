package chat

import (
	"encoding/json"
	"strings"
	"testing"
)

var weatherTool = json.RawMessage(`{"type":"function","function":{"name":"get_weather","description":"The weather in a city",` +
	`"parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}`)

// TestRenderTools renders Qwen2.5's real template with a tool, an
// assistant's call and the tool's answer: the tool definition as the
// template's tojson writes it (keys in the client's order), the call's
// arguments parsed, the tool message in the template's tool_response tags.
func TestRenderTools(t *testing.T) {
	tmpl := parseFile(t, "qwen2.5-instruct")
	if tmpl.ToolFormat() != ToolsHermes {
		t.Fatalf("qwen2.5's tool format %v, want hermes", tmpl.ToolFormat())
	}
	msgs := []Message{
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", ToolCalls: []ToolCall{{ID: "call_1", Name: "get_weather", Arguments: `{"city":"Paris"}`}}},
		{Role: "tool", ToolCallID: "call_1", Content: `{"temp":21}`},
	}
	got, err := tmpl.RenderTools(msgs, []json.RawMessage{weatherTool}, true, "", "<|im_end|>")
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.\n\n# Tools\n\n" +
		"You may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" +
		`{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}` +
		"\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n" +
		"{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
		"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>\n" +
		"<|im_start|>user\n<tool_response>\n{\"temp\":21}\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Errorf("rendered:\n%q\nwant:\n%q", got, want)
	}
	// Without tools the same template renders its plain system prompt.
	plain, err := tmpl.RenderTools(msgs[:1], nil, true, "", "<|im_end|>")
	if err != nil || strings.Contains(plain, "# Tools") {
		t.Errorf("no tools: %q, %v", plain, err)
	}
	if _, err := tmpl.RenderTools([]Message{{Role: "assistant", ToolCalls: []ToolCall{{Name: "f", Arguments: "{"}}}}, nil, true, "", ""); err == nil {
		t.Error("a call whose arguments are not JSON rendered")
	}
}

func TestToolFormats(t *testing.T) {
	for model, want := range map[string]ToolFormat{
		"qwen2.5-instruct": ToolsHermes, "llama3-instruct": ToolsNone, "mistral-instruct": ToolsNone, "llama2-chat": ToolsNone,
	} {
		if got := parseFile(t, model).ToolFormat(); got != want {
			t.Errorf("%s: %v, want %v", model, got, want)
		}
	}
	for src, want := range map[string]ToolFormat{
		`{% if tools %}[AVAILABLE_TOOLS]{% endif %}{{ '[TOOL_CALLS]' }}`:                ToolsMistral,
		`{% if tools %}<|start_header_id|>ipython "parameters": dict{% endif %}`:        ToolsLlama3,
		`{% for tool in tools %}{{ tool | tojson }}{% endfor %}<tool_call></tool_call>`: ToolsHermes,
		`{% for m in messages %}{{ m.content }}{% endfor %}`:                            ToolsNone,
	} {
		if got := mustParse(t, src).ToolFormat(); got != want {
			t.Errorf("%s: %v, want %v", src, got, want)
		}
	}
}

func TestParseToolCalls(t *testing.T) {
	for _, tc := range []struct {
		name    string
		format  ToolFormat
		text    string
		content string
		calls   []ToolCall
		ok      bool
	}{
		{"hermes, two calls", ToolsHermes, "Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>{\"name\":\"now\",\"arguments\":{}}</tool_call>",
			"Let me look.", []ToolCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}, {Name: "now", Arguments: `{}`}}, true},
		{"hermes, cut off", ToolsHermes, "<tool_call>\n{\"name\": \"get_weather\", \"argu", "<tool_call>\n{\"name\": \"get_weather\", \"argu", nil, false},
		{"hermes, plain text", ToolsHermes, "It is sunny.", "It is sunny.", nil, false},
		{"llama 3", ToolsLlama3, `{"name": "get_weather", "parameters": {"city": "Paris"}}`, "", []ToolCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}, true},
		{"llama 3, python tag", ToolsLlama3, `<|python_tag|>{"name": "now", "parameters": {}}`, "", []ToolCall{{Name: "now", Arguments: `{}`}}, true},
		{"llama 3, prose", ToolsLlama3, "It is sunny.", "It is sunny.", nil, false},
		{"mistral", ToolsMistral, `[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}]`, "", []ToolCall{{Name: "get_weather", Arguments: `{"city":"Paris"}`}}, true},
		{"mistral, arguments not an object", ToolsMistral, `[TOOL_CALLS][{"name": "f", "arguments": 3}]`, `[TOOL_CALLS][{"name": "f", "arguments": 3}]`, nil, false},
		{"no name", ToolsHermes, `<tool_call>{"arguments":{}}</tool_call>`, `<tool_call>{"arguments":{}}</tool_call>`, nil, false},
		{"no tools", ToolsNone, `<tool_call>{"name":"f"}</tool_call>`, `<tool_call>{"name":"f"}</tool_call>`, nil, false},
	} {
		content, calls, ok := ParseToolCalls(tc.format, tc.text)
		if content != tc.content || ok != tc.ok || len(calls) != len(tc.calls) {
			t.Errorf("%s: (%q, %+v, %v), want (%q, %+v, %v)", tc.name, content, calls, ok, tc.content, tc.calls, tc.ok)
			continue
		}
		for i := range calls {
			if calls[i] != tc.calls[i] {
				t.Errorf("%s: call %d %+v, want %+v", tc.name, i, calls[i], tc.calls[i])
			}
		}
	}
}
