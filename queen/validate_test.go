package queen

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/schemas"
)

// chatWith is a valid chat request with extra top-level fields.
func chatWith(extra string) string {
	return `{"model":"stories260K","messages":[{"role":"user","content":"Once"}],"max_tokens":4` + extra + `}`
}

// chatSaying is a valid chat request whose one message's content is the
// JSON value content.
func chatSaying(content string) string {
	return `{"model":"stories260K","messages":[{"role":"user","content":` + content + `}],"max_tokens":4}`
}

// completionWith is a valid completion request with extra fields.
func completionWith(extra string) string {
	return `{"model":"stories260K","prompt":"Once","max_tokens":4` + extra + `}`
}

func withModel(name string) string {
	return `{"model":"` + name + `","prompt":"Once","max_tokens":4}`
}

// TestMalformedRequests sends a real queen on a real JetStream server one
// malformed request after another. Each gets its 4xx with its code, none
// reaches the work queue, and the queen serves a good request afterwards.
func TestMalformedRequests(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{"alice": {}}, nil)
	taken := k.startWorker(model, say("Once"))
	const (
		chat = "/v1/chat/completions"
		comp = "/v1/completions"
		bad  = schemas.CodeInvalidRequest
	)
	many := func(n int, item string) string { return strings.TrimSuffix(strings.Repeat(item+",", n), ",") }
	cases := []struct {
		name         string
		method, path string
		body         string
		header       map[string]string
		status       int
		code         schemas.Code
	}{
		// Oversized.
		{"body over 8 MiB", "POST", chat, chatWith(`,"user":"` + strings.Repeat("x", maxBodyBytes) + `"`), nil, 413, schemas.CodeTooLarge},
		{"prompt over its limit", "POST", comp, `{"model":"stories260K","prompt":"` + strings.Repeat("x", schemas.MaxPromptBytes+1) + `"}`, nil, 400, bad},
		{"messages over their limit", "POST", chat, `{"model":"stories260K","messages":[` + many(schemas.MaxMessages+1, `{"role":"user","content":"x"}`) + `]}`, nil, 400, bad},
		{"messages' text over its limit", "POST", chat, `{"model":"stories260K","messages":[` + many(2, `{"role":"user","content":"`+strings.Repeat("y", schemas.MaxPromptBytes/2+1)+`"}`) + `]}`, nil, 400, bad},
		{"too many stop strings", "POST", chat, chatWith(`,"stop":[` + many(schemas.MaxStop+1, `"s"`) + `]`), nil, 400, bad},
		{"stop string too long", "POST", chat, chatWith(`,"stop":"` + strings.Repeat("s", maxStopBytes+1) + `"`), nil, 400, bad},
		// Wrong types.
		{"model a number", "POST", chat, `{"model":7,"messages":[{"role":"user","content":"x"}]}`, nil, 400, bad},
		{"messages a string", "POST", chat, `{"model":"stories260K","messages":"hi"}`, nil, 400, bad},
		{"messages an object", "POST", chat, `{"model":"stories260K","messages":{"role":"user"}}`, nil, 400, bad},
		{"content a number", "POST", chat, chatSaying(`42`), nil, 400, bad},
		{"content an object", "POST", chat, chatSaying(`{"text":"x"}`), nil, 400, bad},
		{"role a number", "POST", chat, `{"model":"stories260K","messages":[{"role":1,"content":"x"}]}`, nil, 400, bad},
		{"max_tokens a string", "POST", chat, `{"model":"stories260K","messages":[{"role":"user","content":"x"}],"max_tokens":"4"}`, nil, 400, bad},
		{"max_tokens a fraction", "POST", comp, `{"model":"stories260K","prompt":"x","max_tokens":1.5}`, nil, 400, bad},
		{"max_tokens beyond any number", "POST", comp, `{"model":"stories260K","prompt":"x","max_tokens":1e400}`, nil, 400, bad},
		{"temperature a string", "POST", chat, chatWith(`,"temperature":"hot"`), nil, 400, bad},
		{"top_p a bool", "POST", chat, chatWith(`,"top_p":true`), nil, 400, bad},
		{"stream a string", "POST", chat, chatWith(`,"stream":"yes"`), nil, 400, bad},
		{"stop a number", "POST", chat, chatWith(`,"stop":3`), nil, 400, bad},
		{"stop numbers", "POST", chat, chatWith(`,"stop":[1,2]`), nil, 400, bad},
		{"seed a string", "POST", chat, chatWith(`,"seed":"7"`), nil, 400, bad},
		{"n a string", "POST", chat, chatWith(`,"n":"1"`), nil, 400, bad},
		{"stream_options a string", "POST", chat, chatWith(`,"stream_options":"usage"`), nil, 400, bad},
		{"prompt an object", "POST", comp, `{"model":"stories260K","prompt":{"text":"x"}}`, nil, 400, bad},
		{"prompt a number", "POST", comp, `{"model":"stories260K","prompt":5}`, nil, 400, bad},
		{"prompt tokens", "POST", comp, `{"model":"stories260K","prompt":[1,2,3]}`, nil, 400, bad},
		{"body an array", "POST", chat, `[]`, nil, 400, bad},
		{"body null", "POST", chat, `null`, nil, 400, bad},
		{"body a string", "POST", comp, `"Once upon a time"`, nil, 400, bad},
		{"body empty", "POST", chat, ``, nil, 400, bad},
		{"body cut short", "POST", chat, chatWith(``)[:30], nil, 400, bad},
		{"garbage after the body", "POST", chat, chatWith(``) + ` {}`, nil, 400, bad},
		{"form-encoded body", "POST", comp, `model=stories260K&prompt=x`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 400, bad},
		// Out of range.
		{"max_tokens 0", "POST", comp, `{"model":"stories260K","prompt":"x","max_tokens":0}`, nil, 400, bad},
		{"max_tokens negative", "POST", comp, `{"model":"stories260K","prompt":"x","max_tokens":-1}`, nil, 400, bad},
		{"max_tokens past the context", "POST", comp, `{"model":"stories260K","prompt":"x","max_tokens":513}`, nil, 400, schemas.CodeContextExceeded},
		{"max_tokens past any limit", "POST", comp, `{"model":"stories260K","prompt":"x","max_tokens":1099511627776}`, nil, 400, bad},
		{"max_completion_tokens 0", "POST", chat, chatWith(`,"max_completion_tokens":0`), nil, 400, bad},
		{"temperature negative", "POST", chat, chatWith(`,"temperature":-0.1`), nil, 400, bad},
		{"temperature above 2", "POST", chat, chatWith(`,"temperature":2.5`), nil, 400, bad},
		{"top_p above 1", "POST", chat, chatWith(`,"top_p":1.5`), nil, 400, bad},
		{"top_p negative", "POST", chat, chatWith(`,"top_p":-1`), nil, 400, bad},
		{"presence_penalty above 2", "POST", chat, chatWith(`,"presence_penalty":3`), nil, 400, bad},
		{"frequency_penalty below -2", "POST", chat, chatWith(`,"frequency_penalty":-3`), nil, 400, bad},
		{"top_k negative", "POST", chat, chatWith(`,"top_k":-1`), nil, 400, bad},
		{"min_p above 1", "POST", chat, chatWith(`,"min_p":2`), nil, 400, bad},
		{"n of 0", "POST", chat, chatWith(`,"n":0`), nil, 400, bad},
		{"n past the limit", "POST", comp, completionWith(`,"n":5`), nil, 400, bad},
		{"timeout negative", "POST", chat, chatWith(`,"timeout":-1`), nil, 400, bad},
		{"timeout past a day", "POST", chat, chatWith(`,"timeout":1e9`), nil, 400, bad},
		{"unreadable deadline header", "POST", chat, chatWith(``), map[string]string{HeaderDeadline: "tomorrow"}, 400, bad},
		{"empty messages", "POST", chat, `{"model":"stories260K","messages":[]}`, nil, 400, bad},
		{"unknown role", "POST", chat, `{"model":"stories260K","messages":[{"role":"root","content":"x"}]}`, nil, 400, bad},
		{"empty prompt", "POST", comp, `{"model":"stories260K","prompt":""}`, nil, 400, bad},
		{"two prompts", "POST", comp, `{"model":"stories260K","prompt":["a","b"]}`, nil, 400, bad},
		{"empty stop string", "POST", chat, chatWith(`,"stop":[""]`), nil, 400, bad},
		// Control characters and invalid UTF-8.
		{"NUL in a message", "POST", chat, chatSaying(`"Once\u0000upon"`), nil, 400, bad},
		{"escape in a message", "POST", chat, chatSaying(`"\u001b[31mred"`), nil, 400, bad},
		{"bell in a prompt", "POST", comp, `{"model":"stories260K","prompt":"ding\u0007"}`, nil, 400, bad},
		{"DEL in a prompt", "POST", comp, `{"model":"stories260K","prompt":"x\u007f"}`, nil, 400, bad},
		{"NUL in a text part", "POST", chat, chatSaying(`[{"type":"text","text":"a\u0000"}]`), nil, 400, bad},
		{"NUL in a stop string", "POST", chat, chatWith(`,"stop":["\u0000"]`), nil, 400, bad},
		{"raw invalid UTF-8 in a message", "POST", chat, chatSaying("\"Once \xff upon\""), nil, 400, bad},
		{"overlong UTF-8", "POST", comp, "{\"model\":\"stories260K\",\"prompt\":\"\xc0\xaf\"}", nil, 400, bad},
		{"invalid UTF-8 in a field name", "POST", chat, chatWith(",\"us\xfeer\":\"x\""), nil, 400, bad},
		{"a lone surrogate half, raw", "POST", comp, "{\"model\":\"stories260K\",\"prompt\":\"\xed\xa0\x80\"}", nil, 400, bad},
		// Deep nesting.
		{"nested metadata", "POST", chat, chatWith(`,"metadata":` + strings.Repeat(`{"a":`, maxDepth) + `1` + strings.Repeat(`}`, maxDepth)), nil, 400, bad},
		{"ten thousand brackets", "POST", comp, strings.Repeat("[", 10000) + strings.Repeat("]", 10000), nil, 400, bad},
		{"deep content parts", "POST", chat, chatSaying(strings.Repeat("[", 100) + strings.Repeat("]", 100)), nil, 400, bad},
		// Path tricks, in model names and job IDs.
		{"model climbing up", "POST", comp, withModel(`../../etc/passwd`), nil, 400, bad},
		{"model with ..", "POST", comp, withModel(`a..b`), nil, 400, bad},
		{"model with a slash", "POST", comp, withModel(`stories260K/x`), nil, 400, bad},
		{"model a subject wildcard", "POST", comp, withModel(`>`), nil, 400, bad},
		{"model with a dot", "POST", comp, withModel(`stories.*`), nil, 400, bad},
		{"model with NUL", "POST", comp, withModel(`stories260K\u0000`), nil, 400, bad},
		{"model with a space", "POST", comp, withModel(`stories 260K`), nil, 400, bad},
		{"model too long", "POST", comp, withModel(strings.Repeat("m", 200)), nil, 400, bad},
		{"model empty", "POST", comp, withModel(``), nil, 400, bad},
		{"job ID climbing up", "GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", ``, nil, 400, bad},
		{"job ID with a wildcard", "DELETE", "/v1/jobs/a.%3E", ``, nil, 400, bad},
		{"job ID with NUL", "GET", "/v1/jobs/a%00b", ``, nil, 400, bad},
		{"job ID too long", "GET", "/v1/jobs/" + strings.Repeat("j", 200), ``, nil, 400, bad},
		{"path with NUL", "GET", "/v1/models%00", ``, nil, 404, schemas.CodeNotFound},
		{"path beside the API", "POST", "/v1/chat/completions/x", chatWith(``), nil, 404, schemas.CodeNotFound},
		{"wrong method", "PUT", chat, chatWith(``), nil, 405, schemas.CodeMethodNotAllowed},
		// Unknown fields, and fields rbee cannot honour.
		{"unknown field", "POST", chat, chatWith(`,"foo":1`), nil, 400, bad},
		{"field in other case", "POST", chat, chatWith(`,"Temperature":0.5`), nil, 400, bad},
		{"field with a space", "POST", chat, chatWith(`,"max_tokens ":5`), nil, 400, bad},
		{"llama.cpp's n_predict", "POST", comp, completionWith(`,"n_predict":5`), nil, 400, bad},
		{"unknown message field", "POST", chat, `{"model":"stories260K","messages":[{"role":"user","content":"x","mood":"sad"}]}`, nil, 400, bad},
		{"prompt on chat", "POST", chat, chatWith(`,"prompt":"x"`), nil, 400, bad},
		{"messages on completions", "POST", comp, completionWith(`,"messages":[]`), nil, 400, bad},
		{"a tool not a function", "POST", chat, chatWith(`,"tools":[{"type":"retrieval","function":{"name":"f"}}]`), nil, 400, bad},
		{"a tool with a bad name", "POST", chat, chatWith(`,"tools":[{"type":"function","function":{"name":"a b"}}]`), nil, 400, bad},
		{"tool_choice required without tools", "POST", chat, chatWith(`,"tool_choice":"required"`), nil, 400, bad},
		{"tool_choice malformed", "POST", chat, chatWith(`,"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function"}`), nil, 400, bad},
		{"tool_choice naming no tool", "POST", chat, chatWith(`,"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}`), nil, 400, bad},
		{"tool calls without a name", "POST", chat, `{"model":"stories260K","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"1"}]}]}`, nil, 400, bad},
		{"tool calls on a user message", "POST", chat, `{"model":"stories260K","messages":[{"role":"user","content":"x","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, nil, 400, bad},
		{"tools with n 2", "POST", chat, chatWith(`,"n":2,"tools":[{"type":"function","function":{"name":"f"}}]`), nil, 400, bad},
		{"logprobs not a boolean", "POST", chat, chatWith(`,"logprobs":3`), nil, 400, bad},
		{"top_logprobs without logprobs", "POST", chat, chatWith(`,"top_logprobs":3`), nil, 400, bad},
		{"top_logprobs past 20", "POST", chat, chatWith(`,"logprobs":true,"top_logprobs":21`), nil, 400, bad},
		{"completions logprobs past 5", "POST", comp, completionWith(`,"logprobs":6`), nil, 400, bad},
		{"top_logprobs on completions", "POST", comp, completionWith(`,"top_logprobs":2`), nil, 400, schemas.CodeUnsupportedParameter},
		{"logit_bias key not a token", "POST", chat, chatWith(`,"logit_bias":{"x":2}`), nil, 400, bad},
		{"logit_bias past 100", "POST", chat, chatWith(`,"logit_bias":{"1":101}`), nil, 400, bad},
		{"audio output", "POST", chat, chatWith(`,"modalities":["text","audio"]`), nil, 400, bad},
		{"image part", "POST", chat, chatSaying(`[{"type":"image_url","image_url":{"url":"http://x"}}]`), nil, 400, bad},
		{"suffix", "POST", comp, completionWith(`,"suffix":"The end."`), nil, 400, schemas.CodeUnsupportedParameter},
		{"echo", "POST", comp, completionWith(`,"echo":true`), nil, 400, schemas.CodeUnsupportedParameter},
		{"best_of 3", "POST", comp, completionWith(`,"best_of":3`), nil, 400, schemas.CodeUnsupportedParameter},
	}
	if len(cases) < 60 {
		t.Fatalf("%d cases; the issue asks for 60 at least", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := bearer(k.keys["alice"])
			for name, v := range tc.header {
				h[name] = v
			}
			if _, ok := h["Content-Type"]; !ok {
				h["Content-Type"] = "application/json"
			}
			resp, code := k.send(tc.method, tc.path, tc.body, h)
			if resp.StatusCode != tc.status || code != string(tc.code) {
				t.Errorf("status %d code %q, want %d %s", resp.StatusCode, code, tc.status, tc.code)
			}
		})
	}

	// Still serving, and nothing malformed reached the queue: the first job
	// the worker takes is this one.
	resp, code := k.send("POST", chat, chatSaying(`"still\tserving\n"`), bearer(k.keys["alice"]))
	if resp.StatusCode != 200 {
		t.Fatalf("a good request after the malformed ones: %d %s", resp.StatusCode, code)
	}
	if j := recvJob(t, taken); len(j.Job.Messages) != 1 || j.Job.Messages[0].Content != "still\tserving\n" {
		t.Errorf("the first job queued is %+v, not the good request", j.Job)
	}
}

// TestOpenAIFieldsAccepted sends every field OpenAI defines at a value rbee
// honours or that asks for nothing: each request is served.
func TestOpenAIFieldsAccepted(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say("Once"))
	for _, body := range []string{
		chatWith(`,"user":"u1","metadata":{"team":"a"},"store":false,"service_tier":"auto","safety_identifier":"s",` +
			`"prompt_cache_key":"k","parallel_tool_calls":true,"reasoning_effort":"low","verbosity":"low","prediction":null,` +
			`"logit_bias":{},"logprobs":false,"top_logprobs":null,"tools":[],"tool_choice":"none","functions":null,` +
			`"function_call":"auto","audio":null,"modalities":["text"],"web_search_options":null,` +
			`"stream_options":null,"n":1,"seed":3,"top_p":1,"temperature":2,"presence_penalty":0,"frequency_penalty":0,` +
			`"stop":["\n\n"],"max_completion_tokens":4,"top_k":40,"min_p":0.05,"repeat_penalty":1.1,"timeout":60`),
		`{"model":"stories260K","messages":[{"role":"system","content":"Tell\tstories.\r\n","name":"narrator"},` +
			`{"role":"assistant","content":"Once","refusal":null,"tool_calls":[]},{"role":"user","content":[{"type":"text","text":"more"}]}]}`,
		completionWith(`,"user":"u1","best_of":1,"echo":false,"suffix":null,"logprobs":null,"logit_bias":null,"n":1,"stream":false,"seed":1`),
	} {
		path := "/v1/completions"
		if strings.Contains(body, `"messages"`) {
			path = "/v1/chat/completions"
		}
		resp, v := f.post(path, body)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status %d %v for %s", resp.StatusCode, v, body)
			continue
		}
		recvJob(t, taken)
	}
}

// FuzzCheckBody feeds arbitrary bytes to the body checks: they never
// panic, and what they pass decodes.
func FuzzCheckBody(f *testing.F) {
	for _, seed := range []string{chatWith(`,"tools":[]`), completionWith(`,"echo":false`), `{"messages":[{"role":"user","x":1}]}`, "[[[", "{\"a\xff\":1}", `"\"`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, chat := range []bool{true, false} {
			if err := checkBody(body, chat); err != nil && schemas.CodeOf(err) != schemas.CodeInvalidRequest {
				t.Fatalf("checkBody(%q): code %s", body, schemas.CodeOf(err))
			}
		}
	})
}
