package schemas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

type validator interface{ Validate() error }

// checkValidate runs Validate and checks the outcome: nil when want is
// empty, otherwise an invalid_request error whose message contains want.
func checkValidate(t *testing.T, name string, v validator, want string) {
	t.Helper()
	err := v.Validate()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: unexpected error %v", name, err)
	case want != "" && err == nil:
		t.Errorf("%s: no error, want one about %q", name, want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("%s: error %q does not mention %q", name, err, want)
	case err != nil && CodeOf(err) != CodeInvalidRequest:
		t.Errorf("%s: code %s, want %s", name, CodeOf(err), CodeInvalidRequest)
	}
}

func TestJobValidate(t *testing.T) {
	long := strings.Repeat("a", 128)
	for _, tc := range []struct {
		name   string
		change func(*Job)
		want   string
	}{
		{"prompt job", func(*Job) {}, ""},
		{"chat job", func(j *Job) { *j = validChatJob() }, ""},
		{"no prompt or messages", func(j *Job) { j.Prompt = "" }, ""},
		{"defaults", func(j *Job) { j.Sampling = Sampling{}; j.MaxTokens = 0; j.Stop = nil }, ""},
		{"greedy", func(j *Job) { j.Temperature = ptr(0.0) }, ""},
		{"longest id", func(j *Job) { j.ID = long }, ""},
		{"max tokens at limit", func(j *Job) { j.MaxTokens = MaxTokensLimit }, ""},
		{"prompt at limit", func(j *Job) { j.Prompt = strings.Repeat("x", MaxPromptBytes) }, ""},
		{"all roles", func(j *Job) {
			*j = validChatJob()
			for _, r := range []string{"system", "user", "assistant", "tool", "developer"} {
				j.Messages = append(j.Messages, Message{Role: r})
			}
		}, ""},

		{"empty id", func(j *Job) { j.ID = "" }, "id"},
		{"id too long", func(j *Job) { j.ID = long + "a" }, "id"},
		{"id with dot", func(j *Job) { j.ID = "a.b" }, "id"},
		{"id with colon", func(j *Job) { j.ID = "a:b" }, "id"},
		{"id starting with dash", func(j *Job) { j.ID = "-a" }, "id"},
		{"empty model", func(j *Job) { j.Model = "" }, "model"},
		{"model with dot", func(j *Job) { j.Model = "llama.3" }, "model"},
		{"model with wildcard", func(j *Job) { j.Model = "*" }, "model"},
		{"model with space", func(j *Job) { j.Model = "a b" }, "model"},
		{"empty stream", func(j *Job) { j.Stream = "" }, "stream"},
		{"stream wildcard", func(j *Job) { j.Stream = "rbee.v2.stream.*" }, "stream"},
		{"stream full wildcard", func(j *Job) { j.Stream = "rbee.v2.stream.>" }, "stream"},
		{"stream with space", func(j *Job) { j.Stream = "a b" }, "stream"},
		{"stream with newline", func(j *Job) { j.Stream = "a\nb" }, "stream"},
		{"prompt and messages", func(j *Job) { j.Messages = []Message{{Role: "user"}} }, "not both"},
		{"prompt too long", func(j *Job) { j.Prompt = strings.Repeat("x", MaxPromptBytes+1) }, "prompt"},
		{"too many messages", func(j *Job) {
			*j = validChatJob()
			j.Messages = make([]Message, MaxMessages+1)
		}, "messages"},
		{"messages too long", func(j *Job) {
			*j = validChatJob()
			half := strings.Repeat("x", MaxPromptBytes/2+1)
			j.Messages = []Message{{Role: "user", Content: half}, {Role: "assistant", Content: half}}
		}, "bytes"},
		{"bad role", func(j *Job) { *j = validChatJob(); j.Messages[1].Role = "robot" }, "role"},
		{"empty role", func(j *Job) { *j = validChatJob(); j.Messages[0].Role = "" }, "messages[0].role"},
		{"negative max tokens", func(j *Job) { j.MaxTokens = -1 }, "max_tokens"},
		{"max tokens over limit", func(j *Job) { j.MaxTokens = MaxTokensLimit + 1 }, "max_tokens"},
		{"too many stops", func(j *Job) { j.Stop = make([]string, MaxStop+1) }, "stop"},
		{"empty stop", func(j *Job) { j.Stop = []string{"a", ""} }, "stop[1]"},
		{"negative temperature", func(j *Job) { j.Temperature = ptr(-0.1) }, "temperature"},
		{"temperature too high", func(j *Job) { j.Temperature = ptr(10.5) }, "temperature"},
		{"NaN temperature", func(j *Job) { j.Temperature = ptr(math.NaN()) }, "temperature"},
		{"negative top_k", func(j *Job) { j.TopK = -1 }, "top_k"},
		{"top_p over 1", func(j *Job) { j.TopP = 1.5 }, "top_p"},
		{"NaN top_p", func(j *Job) { j.TopP = math.NaN() }, "top_p"},
		{"negative min_p", func(j *Job) { j.MinP = -0.1 }, "min_p"},
		{"repeat penalty too high", func(j *Job) { j.RepeatPenalty = 11 }, "repeat_penalty"},
		{"presence penalty too low", func(j *Job) { j.PresencePenalty = -2.1 }, "presence_penalty"},
		{"frequency penalty too high", func(j *Job) { j.FrequencyPenalty = math.Inf(1) }, "frequency_penalty"},
		{"negative logprobs", func(j *Job) { j.Logprobs = ptr(-1) }, "logprobs"},
		{"too many choices", func(j *Job) { j.N = MaxChoices + 1 }, "n 17"},
		{"tool with a bad name", func(j *Job) { j.Tools = []Tool{{Name: "a b"}} }, "tools[0].function.name"},
		{"two tools of a name", func(j *Job) { j.Tools = []Tool{{Name: "f"}, {Name: "f"}} }, "two tools"},
		{"tool parameters not an object", func(j *Job) { j.Tools = []Tool{{Name: "f", Parameters: []byte("[1]")}} }, "parameters"},
		{"tool_choice unknown", func(j *Job) { j.Tools, j.ToolChoice = []Tool{{Name: "f"}}, "maybe" }, "tool_choice"},
		{"tool_choice required without tools", func(j *Job) { j.ToolChoice = ToolChoiceRequired }, "without tools"},
		{"tool_choice naming another function", func(j *Job) {
			j.Tools, j.ToolChoice, j.ToolName = []Tool{{Name: "f"}}, ToolChoiceFunction, "g"
		}, "not among the tools"},
		{"tools with a prompt", func(j *Job) { j.Messages, j.Tools = nil, []Tool{{Name: "f"}} }, "need messages"},
		{"tool calls on a user message", func(j *Job) {
			j.Prompt, j.Messages = "", []Message{{Role: "user", ToolCalls: []ToolCall{{Name: "f", Arguments: "{}"}}}}
		}, "tool_calls on a user"},
		{"too many alternatives", func(j *Job) { j.Logprobs = ptr(MaxTopLogprobs + 1) }, "logprobs"},
		{"logit bias past 100", func(j *Job) { j.LogitBias = map[int32]float64{5: 100.5} }, "logit_bias[5]"},
		{"logit bias of a negative token", func(j *Job) { j.LogitBias = map[int32]float64{-1: 1} }, "logit_bias"},
	} {
		j := validJob()
		tc.change(&j)
		checkValidate(t, tc.name, &j, tc.want)
	}
}

func TestInferRequestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*InferRequest)
		want   string
	}{
		{"chat", func(*InferRequest) {}, ""},
		{"prompt", func(r *InferRequest) { r.Messages = nil; r.Prompt = "hi" }, ""},
		{"no model", func(r *InferRequest) { r.Model = "" }, "model"},
		{"bad model", func(r *InferRequest) { r.Model = "a.b" }, "model"},
		{"both", func(r *InferRequest) { r.Prompt = "hi" }, "not both"},
		{"bad role", func(r *InferRequest) { r.Messages[0].Role = "x" }, "role"},
		{"bad sampling", func(r *InferRequest) { r.TopP = 2 }, "top_p"},
		{"max tokens", func(r *InferRequest) { r.MaxTokens = -3 }, "max_tokens"},
		{"client id", func(r *InferRequest) { r.ID = "my-job_1" }, ""},
		{"bad id", func(r *InferRequest) { r.ID = "a.b" }, "id"},
		{"wildcard id", func(r *InferRequest) { r.ID = "*" }, "id"},
	} {
		r := validInferRequest()
		tc.change(&r)
		checkValidate(t, tc.name, &r, tc.want)
	}
}

func TestInferRequestJob(t *testing.T) {
	r := validInferRequest()
	r.Stop = []string{"END"}
	j := r.Job("job-9", "rbee.v2.stream.q1.job-9")
	if err := j.Validate(); err != nil {
		t.Fatalf("job from a valid request: %v", err)
	}
	if j.ID != "job-9" || j.Stream != "rbee.v2.stream.q1.job-9" || j.Model != r.Model || j.MaxTokens != r.MaxTokens ||
		len(j.Messages) != 1 || j.Stop[0] != "END" || *j.Temperature != 0 {
		t.Errorf("Job() = %+v, from %+v", j, r)
	}
	if !j.CreatedAt.IsZero() {
		t.Errorf("CreatedAt = %v, want it left to the queen", j.CreatedAt)
	}
	if got := j.String(); got != "job job-9 (tiny)" {
		t.Errorf("String() = %q", got)
	}
}

func TestEventValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		ev   func() Event
		want string
	}{
		{"token", tokenEvent, ""},
		{"end", endEvent, ""},
		{"end stop", func() Event { e := endEvent(); e.StopReason = StopReasonStop; return e }, ""},
		{"error", errorEvent, ""},
		{"token id zero", func() Event { e := tokenEvent(); e.TokenID = ptr[int32](0); return e }, ""},
		{"empty token text", func() Event { e := tokenEvent(); e.Text = ""; return e }, ""},

		{"negative seq", func() Event { e := tokenEvent(); e.Seq = -1; return e }, "seq"},
		{"no delivery", func() Event { e := tokenEvent(); e.Delivery = 0; return e }, "delivery"},
		{"token without id", func() Event { e := tokenEvent(); e.TokenID = nil; return e }, "token_id"},
		{"end without usage", func() Event { e := endEvent(); e.Usage = nil; return e }, "usage"},
		{"end without reason", func() Event { e := endEvent(); e.StopReason = ""; return e }, "stop_reason"},
		{"end with odd reason", func() Event { e := endEvent(); e.StopReason = "content_filter"; return e }, "stop_reason"},
		{"end with tool calls", func() Event {
			e := endEvent()
			e.StopReason, e.ToolCalls = StopReasonToolCalls, []ToolCall{{ID: "call_1", Name: "f", Arguments: "{}"}}
			return e
		}, ""},
		{"error without error", func() Event { e := errorEvent(); e.Error = nil; return e }, "error code"},
		{"error without code", func() Event { e := errorEvent(); e.Error = &Error{Message: "x"}; return e }, "error code"},
		{"no type", func() Event { e := tokenEvent(); e.Type = ""; return e }, "event type"},
		{"unknown type", func() Event { e := tokenEvent(); e.Type = "tok"; return e }, "event type"},
		{"choice index past the bound", func() Event { e := tokenEvent(); e.Index = MaxChoices; return e }, "index"},
		{"a choice's odd reason", func() Event { e := endEvent(); e.StopReasons = []string{"stop", "x"}; return e }, "stop_reason \"x\""},
		{"choices' reasons", func() Event { e := endEvent(); e.StopReasons = []string{"stop", "length"}; return e }, ""},
	} {
		e := tc.ev()
		checkValidate(t, tc.name, &e, tc.want)
	}
}

func TestWorkerHeartbeatValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*WorkerHeartbeat)
		want   string
	}{
		{"ready", func(*WorkerHeartbeat) {}, ""},
		{"starting", func(h *WorkerHeartbeat) { h.State = WorkerStarting }, ""},
		{"draining", func(h *WorkerHeartbeat) { h.State = WorkerDraining }, ""},
		{"all busy", func(h *WorkerHeartbeat) { h.Busy = h.Slots }, ""},
		{"no hive", func(h *WorkerHeartbeat) { h.HiveID = "" }, ""},

		{"no worker id", func(h *WorkerHeartbeat) { h.WorkerID = "" }, "worker_id"},
		{"bad worker id", func(h *WorkerHeartbeat) { h.WorkerID = "w.1" }, "worker_id"},
		{"no model", func(h *WorkerHeartbeat) { h.Model = "" }, "model"},
		{"bad state", func(h *WorkerHeartbeat) { h.State = "dead" }, "state"},
		{"no slots", func(h *WorkerHeartbeat) { h.Slots = 0; h.Busy = 0 }, "slots"},
		{"negative busy", func(h *WorkerHeartbeat) { h.Busy = -1 }, "slots"},
		{"busy over slots", func(h *WorkerHeartbeat) { h.Busy = h.Slots + 1 }, "slots"},
	} {
		h := validWorkerHeartbeat()
		tc.change(&h)
		checkValidate(t, tc.name, &h, tc.want)
	}
}

func TestHiveHeartbeatValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*HiveHeartbeat)
		want   string
	}{
		{"valid", func(*HiveHeartbeat) {}, ""},
		{"no workers", func(h *HiveHeartbeat) { h.Workers = nil }, ""},
		{"no hive id", func(h *HiveHeartbeat) { h.HiveID = "" }, "hive_id"},
		{"bad hive id", func(h *HiveHeartbeat) { h.HiveID = "h 1" }, "hive_id"},
		{"negative cpus", func(h *HiveHeartbeat) { h.CPUs = -1 }, "cpus"},
	} {
		h := validHiveHeartbeat()
		tc.change(&h)
		checkValidate(t, tc.name, &h, tc.want)
	}
}

func TestControlValidate(t *testing.T) {
	checkValidate(t, "shutdown", &Control{Command: ControlShutdown, Reason: "upgrade"}, "")
	checkValidate(t, "empty", &Control{}, "command")
	checkValidate(t, "unknown", &Control{Command: "reboot"}, "command")
}

func TestErrors(t *testing.T) {
	for code, status := range map[Code]int{
		CodeInvalidRequest: 400, CodeModelNotFound: 404, CodeNoCapacity: 503, CodeCancelled: 499,
		CodeTimeout: 504, CodeInternal: 500, CodeMethodNotAllowed: 405, Code("unheard_of"): 500,
	} {
		if got := code.HTTPStatus(); got != status {
			t.Errorf("%s.HTTPStatus() = %d, want %d", code, got, status)
		}
	}
	err := Errorf(CodeModelNotFound, "model %q", "x")
	if got := err.Error(); got != `model_not_found: model "x"` {
		t.Errorf("Error() = %q", got)
	}
	wrapped := errors.Join(errors.New("context"), err)
	if got := CodeOf(wrapped); got != CodeModelNotFound {
		t.Errorf("CodeOf(wrapped) = %s", got)
	}
	if got := CodeOf(errors.New("plain")); got != CodeInternal {
		t.Errorf("CodeOf(plain) = %s, want %s", got, CodeInternal)
	}
	// Wrap gives a cause a code and keeps it findable.
	gone := Wrap(CodeCancelled, fmt.Errorf("client went away: %w", context.Canceled))
	if !errors.Is(gone, context.Canceled) || CodeOf(gone) != CodeCancelled || gone.Message != "client went away: context canceled" ||
		gone.Retryable || !Wrap(CodeBusUnavailable, errors.New("x")).Retryable {
		t.Errorf("Wrap = %+v", gone)
	}
	if data, _ := json.Marshal(gone); string(data) != `{"code":"cancelled","message":"client went away: context canceled"}` {
		t.Errorf("a wrapped error travels as %s", data)
	}
}

func TestEncodeDecodeEvents(t *testing.T) {
	in := []Event{tokenEvent(), endEvent()}
	data, err := EncodeEvents(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeEvents(nil, data)
	if err != nil || len(out) != 2 || out[0].Text != "Once" || out[1].Usage.TotalTokens != 11 {
		t.Fatalf("DecodeEvents(%q) = %+v, %v", data, out, err)
	}
	for name, body := range map[string]string{
		"empty":         "",
		"blank lines":   "\n\n",
		"not JSON":      "token\n",
		"unknown field": `{"job_id":"j","seq":0,"delivery":1,"type":"token","token_id":1,"extra":1}`,
		"invalid event": `{"job_id":"j","seq":0,"delivery":1,"type":"token"}`,
		"no delivery":   `{"job_id":"j","seq":0,"type":"token","token_id":1}`,
	} {
		if _, err := DecodeEvents(nil, []byte(body)); CodeOf(err) != CodeInvalidRequest {
			t.Errorf("%s: DecodeEvents = %v, want an invalid_request error", name, err)
		}
	}
	lp := tokenEvent()
	lp.Logprobs = &TokenLogprobs{Logprob: -0.5, Bytes: []byte{0xC3}, Top: []TopLogprob{{TokenID: 7, Bytes: []byte{0xC3}, Logprob: -0.5}}}
	data, err = EncodeEvents([]Event{lp})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := DecodeEvents(nil, data); err != nil || out[0].Logprobs == nil || string(out[0].Logprobs.Bytes) != "\xC3" ||
		out[0].Logprobs.Top[0].TokenID != 7 {
		t.Errorf("a token's logprobs, half a character: %+v, %v", out, err)
	}
	many := make([]Event, MaxEventsPerMessage+1)
	for i := range many {
		many[i] = tokenEvent()
	}
	data, _ = EncodeEvents(many)
	if _, err := DecodeEvents(nil, data); CodeOf(err) != CodeInvalidRequest {
		t.Errorf("%d events in a message: %v, want an error", len(many), err)
	}
}
