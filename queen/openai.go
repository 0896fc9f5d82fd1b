package queen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/rbee-dev/rbee/schemas"
)

// The OpenAI request fields rbee understands; clients send many more, which
// are ignored.
type commonRequest struct {
	Model            string       `json:"model"`
	MaxTokens        *int         `json:"max_tokens"`
	Temperature      *float64     `json:"temperature"`
	TopP             *float64     `json:"top_p"`
	TopK             *int         `json:"top_k"`
	MinP             *float64     `json:"min_p"`
	Seed             *int64       `json:"seed"`
	Stop             stringOrList `json:"stop"`
	PresencePenalty  *float64     `json:"presence_penalty"`
	FrequencyPenalty *float64     `json:"frequency_penalty"`
	RepeatPenalty    *float64     `json:"repeat_penalty"`
	N                *int         `json:"n"`
	Stream           bool         `json:"stream"`
	// Timeout bounds the job, queueing included, in seconds (an rbee
	// extension; X-Request-Deadline sets an absolute one).
	Timeout       *float64       `json:"timeout"`
	StreamOptions *streamOptions `json:"stream_options"`
	// ResponseFormat constrains the output to JSON (json_object, or
	// json_schema); on completions too, as llama.cpp and vLLM serve it.
	ResponseFormat *schemas.ResponseFormat `json:"response_format"`
	// LogitBias maps token ids, as strings, to a bias of -100..100.
	LogitBias map[string]float64 `json:"logit_bias"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatRequest struct {
	commonRequest
	Messages            []chatMessageIn `json:"messages"`
	MaxCompletionTokens *int            `json:"max_completion_tokens"`
	Logprobs            *bool           `json:"logprobs"`
	TopLogprobs         *int            `json:"top_logprobs"`
	Tools               []toolIn        `json:"tools"`
	ToolChoice          toolChoice      `json:"tool_choice"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls"`
}

type chatMessageIn struct {
	Role       string       `json:"role"`
	Content    chatContent  `json:"content"`
	Name       string       `json:"name"`
	ToolCallID string       `json:"tool_call_id"`
	ToolCalls  []toolCallIO `json:"tool_calls"`
}

// toolIn is one of a chat request's tools; only functions exist.
type toolIn struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
}

// toolCallIO is a tool call as OpenAI writes it, in assistant messages
// and in answers; Index is set in streamed deltas only.
type toolCallIO struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name      string `json:"name,omitempty"`
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// toolChoice is "none", "auto", "required" or {"type":"function",
// "function":{"name":...}}; Name is set for the last.
type toolChoice struct {
	Mode string
	Name string
}

func (c *toolChoice) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) {
		*c = toolChoice{}
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		return json.Unmarshal(data, &c.Mode)
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(data, &named); err != nil || named.Type != "function" || named.Function.Name == "" {
		return fmt.Errorf(`want "none", "auto", "required" or {"type":"function","function":{"name":...}}`)
	}
	c.Mode, c.Name = schemas.ToolChoiceFunction, named.Function.Name
	return nil
}

type completionRequest struct {
	commonRequest
	Prompt stringOrList `json:"prompt"`
	// Logprobs is the legacy API's: how many alternatives per token, 0 to
	// maxCompletionLogprobs; null for none.
	Logprobs *int `json:"logprobs"`
}

// maxCompletionLogprobs is OpenAI's bound on the completions API's logprobs.
const maxCompletionLogprobs = 5

// stringOrList is a JSON string or array of strings.
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) {
		*s = nil
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var one string
		if err := json.Unmarshal(data, &one); err != nil {
			return err
		}
		*s = []string{one}
		return nil
	}
	var list []string
	if err := json.Unmarshal(data, &list); err != nil {
		return fmt.Errorf("want a string or an array of strings")
	}
	*s = list
	return nil
}

// chatContent is a message's content: a string, null, or an array of text
// parts, which are joined.
type chatContent string

func (c *chatContent) UnmarshalJSON(data []byte) error {
	if bytes.Equal(data, []byte("null")) {
		*c = ""
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*c = chatContent(s)
		return nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(data, &parts); err != nil {
		return fmt.Errorf("want a string or an array of content parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return fmt.Errorf("content part of type %q: only text is supported", p.Type)
		}
		b.WriteString(p.Text)
	}
	*c = chatContent(b.String())
	return nil
}

// inferRequest maps the fields every endpoint shares. maxTokens is the
// request's own limit, if any.
func (r *commonRequest) inferRequest(maxTokens *int) (schemas.InferRequest, error) {
	if r.N != nil && *r.N < 1 {
		return schemas.InferRequest{}, schemas.Errorf(schemas.CodeInvalidRequest, "n %d: want 1 or more choices", *r.N)
	}
	ir := schemas.InferRequest{Model: r.Model, Stop: r.Stop}
	if r.N != nil && *r.N > 1 {
		ir.N = *r.N
	}
	if f := r.ResponseFormat; f != nil && f.Type != schemas.FormatText {
		ir.ResponseFormat = f
	}
	if maxTokens != nil {
		ir.MaxTokens = *maxTokens
	}
	s := &ir.Sampling
	if len(r.LogitBias) > 0 {
		s.LogitBias = make(map[int32]float64, len(r.LogitBias))
		for k, v := range r.LogitBias {
			id, err := strconv.ParseInt(k, 10, 32)
			if err != nil || id < 0 {
				return ir, schemas.Errorf(schemas.CodeInvalidRequest, "logit_bias: key %q is not a token id", clip(k))
			}
			s.LogitBias[int32(id)] = v
		}
	}
	s.Temperature = r.Temperature
	s.Seed = r.Seed
	if r.TopK != nil {
		s.TopK = *r.TopK
	}
	for _, f := range []struct {
		dst *float64
		src *float64
	}{
		{&s.TopP, r.TopP}, {&s.MinP, r.MinP}, {&s.PresencePenalty, r.PresencePenalty},
		{&s.FrequencyPenalty, r.FrequencyPenalty}, {&s.RepeatPenalty, r.RepeatPenalty}, {&ir.Timeout, r.Timeout},
	} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	return ir, nil
}

func (r *chatRequest) inferRequest() (schemas.InferRequest, error) {
	limit := r.MaxCompletionTokens
	if limit == nil {
		limit = r.MaxTokens
	}
	ir, err := r.commonRequest.inferRequest(limit)
	if err != nil {
		return ir, err
	}
	if len(r.Messages) == 0 {
		return ir, schemas.Errorf(schemas.CodeInvalidRequest, "messages is empty")
	}
	ir.Messages = make([]schemas.Message, len(r.Messages))
	for i, m := range r.Messages {
		ir.Messages[i] = schemas.Message{Role: m.Role, Content: string(m.Content), Name: m.Name, ToolCallID: m.ToolCallID}
		for _, c := range m.ToolCalls {
			ir.Messages[i].ToolCalls = append(ir.Messages[i].ToolCalls, schemas.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
		}
	}
	for i, t := range r.Tools {
		if t.Type != "function" {
			return ir, schemas.Errorf(schemas.CodeInvalidRequest, "tools[%d].type %q: only function tools are supported", i, clip(t.Type))
		}
		ir.Tools = append(ir.Tools, schemas.Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters})
	}
	ir.ToolChoice, ir.ToolName = r.ToolChoice.Mode, r.ToolChoice.Name
	if len(ir.Tools) > 0 {
		ir.ParallelToolCalls = r.ParallelToolCalls
	}
	switch {
	case r.TopLogprobs != nil && (*r.TopLogprobs < 0 || *r.TopLogprobs > schemas.MaxTopLogprobs):
		return ir, schemas.Errorf(schemas.CodeInvalidRequest, "top_logprobs %d: want 0 to %d", *r.TopLogprobs, schemas.MaxTopLogprobs)
	case r.TopLogprobs != nil && *r.TopLogprobs > 0 && (r.Logprobs == nil || !*r.Logprobs):
		return ir, schemas.Errorf(schemas.CodeInvalidRequest, "top_logprobs needs logprobs true")
	case r.Logprobs != nil && *r.Logprobs:
		top := 0
		if r.TopLogprobs != nil {
			top = *r.TopLogprobs
		}
		ir.Logprobs = &top
	}
	return ir, nil
}

func (r *completionRequest) inferRequest() (schemas.InferRequest, error) {
	ir, err := r.commonRequest.inferRequest(r.MaxTokens)
	if err != nil {
		return ir, err
	}
	switch {
	case len(r.Prompt) != 1:
		return ir, schemas.Errorf(schemas.CodeInvalidRequest, "prompt: want a string or an array of one string, got %d strings", len(r.Prompt))
	case r.Prompt[0] == "":
		return ir, schemas.Errorf(schemas.CodeInvalidRequest, "prompt is empty")
	}
	ir.Prompt = r.Prompt[0]
	if n := r.Logprobs; n != nil {
		if *n < 0 || *n > maxCompletionLogprobs {
			return ir, schemas.Errorf(schemas.CodeInvalidRequest, "logprobs %d: want 0 to %d", *n, maxCompletionLogprobs)
		}
		ir.Logprobs = n
	}
	return ir, nil
}

// Responses, as OpenAI shapes them.

type completion[C any] struct {
	ID      string         `json:"id"`
	Object  string         `json:"object"`
	Created int64          `json:"created"`
	Model   string         `json:"model"`
	Choices []C            `json:"choices"`
	Usage   *schemas.Usage `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int           `json:"index"`
	Message      *chatOut      `json:"message,omitempty"`
	Delta        *chatOut      `json:"delta,omitempty"`
	FinishReason *string       `json:"finish_reason"`
	Logprobs     *chatLogprobs `json:"logprobs"`
}

// chatLogprobs is a chat choice's logprobs: one entry per token.
type chatLogprobs struct {
	Content []chatTokenLogprob `json:"content"`
	Refusal []chatTokenLogprob `json:"refusal"`
}

type chatTokenLogprob struct {
	Token       string         `json:"token"`
	Logprob     float64        `json:"logprob"`
	Bytes       []int          `json:"bytes"`
	TopLogprobs []chatTopEntry `json:"top_logprobs"`
}

type chatTopEntry struct {
	Token   string  `json:"token"`
	Logprob float64 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// textLogprobs is the completions API's: parallel lists, one entry per
// token; text_offset counts bytes of the generated text.
type textLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float64            `json:"token_logprobs"`
	TopLogprobs   []map[string]float64 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

type chatOut struct {
	Role      string       `json:"role,omitempty"`
	Content   *string      `json:"content,omitempty"`
	ToolCalls []toolCallIO `json:"tool_calls,omitempty"`
}

// answerMessage is a whole answer: its text, or its tool calls (content
// null, as OpenAI has it).
func answerMessage(text string, calls []schemas.ToolCall) *chatOut {
	if len(calls) == 0 {
		return &chatOut{Role: "assistant", Content: &text}
	}
	out := &chatOut{Role: "assistant", ToolCalls: make([]toolCallIO, len(calls))}
	for i, c := range calls {
		out.ToolCalls[i] = toolCallIO{ID: c.ID, Type: "function"}
		out.ToolCalls[i].Function.Name, out.ToolCalls[i].Function.Arguments = c.Name, c.Arguments
	}
	return out
}

// toolCallChunks are a streamed answer's tool calls as OpenAI deltas: per
// call, one with its id, type and name (empty arguments), then one with
// its arguments.
func (a api) toolCallChunks(calls []schemas.ToolCall) []any {
	var out []any
	for i, c := range calls {
		head := toolCallIO{Index: &i, ID: c.ID, Type: "function"}
		head.Function.Name = c.Name
		args := toolCallIO{Index: &i}
		args.Function.Arguments = c.Arguments
		for _, d := range []toolCallIO{head, args} {
			out = append(out, completion[chatChoice]{
				ID: a.id, Object: "chat.completion.chunk", Created: a.created, Model: a.model,
				Choices: []chatChoice{{Delta: &chatOut{ToolCalls: []toolCallIO{d}}}},
			})
		}
	}
	return out
}

type textChoice struct {
	Index        int           `json:"index"`
	Text         string        `json:"text"`
	FinishReason *string       `json:"finish_reason"`
	Logprobs     *textLogprobs `json:"logprobs"`
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
	// Status is rbee's: absent for a model a live worker serves,
	// "not_loaded" for one a hive would start on demand, "failed" for one
	// whose workers a hive gave up on.
	Status string `json:"status,omitempty"`
}

// api is one of the two generation endpoints; it shapes their responses.
type api struct {
	chat bool
	// Fixed per job:
	id       string
	model    string
	created  int64
	logprobs bool // the job asked for them
	n        int  // choices
	// tools: the answer may be tool calls, known only at its end, so a
	// stream holds the text back until then.
	tools bool
}

func newAPI(chat bool, job *schemas.Job) api {
	a := api{chat: chat, model: job.Model, created: job.CreatedAt.Unix(), logprobs: job.Logprobs != nil, n: max(job.N, 1),
		tools: chat && len(job.Tools) > 0 && job.ToolChoice != schemas.ToolChoiceNone}
	if chat {
		a.id = "chatcmpl-" + job.ID
	} else {
		a.id = "cmpl-" + job.ID
	}
	return a
}

// logprobsOf shapes the logprobs of tokens (their token events, in order)
// for the endpoint; offset is the generated text's length before the first
// of them. Nil when the job did not ask for logprobs.
func (a api) logprobsOf(tokens []*schemas.TokenLogprobs, offset int) (*chatLogprobs, *textLogprobs) {
	if !a.logprobs {
		return nil, nil
	}
	if a.chat {
		out := &chatLogprobs{Content: []chatTokenLogprob{}, Refusal: []chatTokenLogprob{}}
		for _, t := range tokens {
			e := chatTokenLogprob{Token: string(t.Bytes), Logprob: t.Logprob, Bytes: byteList(t.Bytes), TopLogprobs: []chatTopEntry{}}
			for _, alt := range t.Top {
				e.TopLogprobs = append(e.TopLogprobs, chatTopEntry{Token: string(alt.Bytes), Logprob: alt.Logprob, Bytes: byteList(alt.Bytes)})
			}
			out.Content = append(out.Content, e)
		}
		return out, nil
	}
	out := &textLogprobs{Tokens: []string{}, TokenLogprobs: []float64{}, TopLogprobs: []map[string]float64{}, TextOffset: []int{}}
	for _, t := range tokens {
		out.Tokens = append(out.Tokens, string(t.Bytes))
		out.TokenLogprobs = append(out.TokenLogprobs, t.Logprob)
		top := make(map[string]float64, len(t.Top))
		for _, alt := range t.Top {
			// Two tokens with the same text keep the likelier.
			if lp, ok := top[string(alt.Bytes)]; !ok || alt.Logprob > lp {
				top[string(alt.Bytes)] = alt.Logprob
			}
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(t.Bytes)
	}
	return nil, out
}

// byteList is bytes as OpenAI lists them: integers, not base64.
func byteList(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}

// choiceOut is what a choice produced, for a whole response.
type choiceOut struct {
	text      strings.Builder
	finish    string
	logprobs  []*schemas.TokenLogprobs
	toolCalls []schemas.ToolCall
}

func (a api) response(choices []choiceOut, usage schemas.Usage) any {
	if a.chat {
		out := completion[chatChoice]{
			ID: a.id, Object: "chat.completion", Created: a.created, Model: a.model,
			Choices: make([]chatChoice, len(choices)), Usage: &usage,
		}
		for i := range choices {
			c := &choices[i]
			text := c.text.String()
			lp, _ := a.logprobsOf(c.logprobs, 0)
			out.Choices[i] = chatChoice{Index: i, Message: answerMessage(text, c.toolCalls), FinishReason: &c.finish, Logprobs: lp}
		}
		return out
	}
	out := completion[textChoice]{
		ID: a.id, Object: "text_completion", Created: a.created, Model: a.model,
		Choices: make([]textChoice, len(choices)), Usage: &usage,
	}
	for i := range choices {
		c := &choices[i]
		_, lp := a.logprobsOf(c.logprobs, 0)
		out.Choices[i] = textChoice{Index: i, Text: c.text.String(), FinishReason: &c.finish, Logprobs: lp}
	}
	return out
}

// tokenChunk is a streamed token of a choice: its text and, when asked
// for, its logprobs; offset is the length of the choice's text streamed
// before it.
func (a api) tokenChunk(index int, text string, first bool, lp *schemas.TokenLogprobs, offset int) any {
	c := a.chunk(index, text, first, nil)
	if lp == nil {
		return c
	}
	chatLP, textLP := a.logprobsOf([]*schemas.TokenLogprobs{lp}, offset)
	switch c := c.(type) {
	case completion[chatChoice]:
		c.Choices[0].Logprobs = chatLP
		return c
	case completion[textChoice]:
		c.Choices[0].Logprobs = textLP
		return c
	}
	return c
}

// heldChunk is the text of a chat answer held back in case it was tool
// calls, with its tokens' logprobs when asked for.
func (a api) heldChunk(text string, tokens []*schemas.TokenLogprobs) any {
	c := a.chunk(0, text, false, nil).(completion[chatChoice])
	c.Choices[0].Logprobs, _ = a.logprobsOf(tokens, 0)
	return c
}

// chunk is one streamed piece of a choice's text; first marks the chat
// chunk that carries the assistant role. finish is set on the choice's
// last chunk only.
func (a api) chunk(index int, text string, first bool, finish *string) any {
	if a.chat {
		delta := &chatOut{}
		if first {
			delta.Role = "assistant"
		}
		if text != "" || first {
			delta.Content = &text
		}
		return completion[chatChoice]{
			ID: a.id, Object: "chat.completion.chunk", Created: a.created, Model: a.model,
			Choices: []chatChoice{{Index: index, Delta: delta, FinishReason: finish}},
		}
	}
	return completion[textChoice]{
		ID: a.id, Object: "text_completion", Created: a.created, Model: a.model,
		Choices: []textChoice{{Index: index, Text: text, FinishReason: finish}},
	}
}

// usageChunk ends a stream whose client asked for stream_options.include_usage.
func (a api) usageChunk(usage schemas.Usage) any {
	object := "text_completion"
	if a.chat {
		object = "chat.completion.chunk"
	}
	return completion[struct{}]{
		ID: a.id, Object: object, Created: a.created, Model: a.model,
		Choices: []struct{}{}, Usage: &usage,
	}
}

// finishReason is choice i's, from the job's end event.
func finishReason(end schemas.Event, i int) string {
	if i < len(end.StopReasons) {
		return end.StopReasons[i]
	}
	return end.StopReason
}
