package schemas

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Limits that keep a single request from exhausting a worker.
const (
	// MaxPromptBytes keeps a job under NATS's default 1 MiB payload limit.
	MaxPromptBytes = 768 << 10
	MaxMessages    = 1024
	MaxStop        = 16
	MaxTokensLimit = 1 << 17
	// MaxTimeoutSeconds bounds a request's timeout: a day.
	MaxTimeoutSeconds = 86400
	// MaxIdempotencyKey bounds an idempotency key's length.
	MaxIdempotencyKey = 255
	// MaxSchemaBytes bounds a response format's JSON Schema.
	MaxSchemaBytes = 64 << 10
	// MaxEmbedInputs bounds the texts of one embed job, as OpenAI does.
	MaxEmbedInputs = 2048
)

// Job kinds. A generation is the default; the others answer with one end
// event carrying their result (Event.Embeddings, Tokens, Pieces, Content).
const (
	KindGenerate   = "generate"
	KindEmbed      = "embed"
	KindTokenize   = "tokenize"
	KindDetokenize = "detokenize"
)

// Message is one chat turn.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
	// OpenAI's tool fields: who spoke (name), the call a tool message
	// answers, an assistant's calls.
	Name       string     `json:"name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
}

// Sampling controls how tokens are chosen. Zero values mean the engine's
// defaults, except Temperature: a nil Temperature means 1.0 (OpenAI's
// default) and 0 means greedy.
type Sampling struct {
	Temperature      *float64 `json:"temperature,omitempty"`
	TopK             int      `json:"top_k,omitempty"`
	TopP             float64  `json:"top_p,omitempty"`
	MinP             float64  `json:"min_p,omitempty"`
	RepeatPenalty    float64  `json:"repeat_penalty,omitempty"`
	PresencePenalty  float64  `json:"presence_penalty,omitempty"`
	FrequencyPenalty float64  `json:"frequency_penalty,omitempty"`
	Seed             *int64   `json:"seed,omitempty"`
	// LogitBias is added to the logits of the tokens it names (token id
	// to -100..100) before every draw, as OpenAI's logit_bias.
	LogitBias map[int32]float64 `json:"logit_bias,omitempty"`
	// Logprobs, when set, asks for each token's log-probability and that
	// many most likely alternatives (0 to MaxTopLogprobs) on its token
	// event. Workers that predate it send none: upgrade workers first.
	Logprobs *int `json:"logprobs,omitempty"`
	// N is how many choices to sample from the prompt (0 means 1): choice
	// i draws with seed Seed+i, and its events carry Event.Index i.
	N int `json:"n,omitempty"`
}

// MaxTopLogprobs bounds the alternatives a token event reports, as OpenAI
// bounds top_logprobs; MaxLogitBias the tokens one request may bias.
const (
	MaxTopLogprobs = 20
	MaxLogitBias   = 1024
	// MaxChoices bounds Sampling.N on the bus; the queen's limit is lower.
	MaxChoices = 16
)

// Job is one generation request, as it sits on the work queue. At most one of
// Prompt and Messages is set (an empty prompt is a story from the start); Messages is rendered with the model's chat
// template by the worker, which owns the model file.
type Job struct {
	ID    string `json:"id"`
	Model string `json:"model"`
	// Stream is the subject of the job's events in the events stream,
	// Subjects.JobEvents(owner, ID): workers publish only there.
	Stream    string    `json:"stream"`
	Prompt    string    `json:"prompt,omitempty"`
	Messages  []Message `json:"messages,omitempty"`
	MaxTokens int       `json:"max_tokens,omitempty"`
	Stop      []string  `json:"stop,omitempty"`
	Sampling
	ResponseFormat *ResponseFormat `json:"response_format,omitempty"`
	ToolUse
	Aux
	CreatedAt time.Time `json:"created_at,omitzero"`
	// Deadline is when the job must be done: a worker that takes it later
	// answers deadline_exceeded without starting it, and one running it
	// stops there. Time spent queued counts.
	Deadline time.Time `json:"deadline,omitzero"`
	// Principal is who asked for the job: the name of the API key the
	// queen checked, or nats:<role> for a bus request. The queen sets it;
	// no client does.
	Principal string `json:"principal,omitempty"`
	// EventKey is the job's own secret (EventKeyBytes in base64), made by
	// the queen; only the worker that pulls the job from the work queue
	// reads it. That worker signs every message it appends to Stream with
	// it (HeaderEventMAC), and the owner relays only signed ones, so no
	// other holder of the shared worker identity can write into the job's
	// answer. Empty: the owner checks no signature, and none is sent.
	EventKey Secret `json:"event_key,omitempty"`
}

// Expired reports whether the job's deadline has passed at now.
func (j *Job) Expired(now time.Time) bool {
	return !j.Deadline.IsZero() && !now.Before(j.Deadline)
}

// Validate checks a job before it is queued or run.
func (j *Job) Validate() error {
	if !ValidID(j.ID) {
		return Errorf(CodeInvalidRequest, "id %q: want 1-128 letters, digits, '-' or '_'", j.ID)
	}
	if !ValidModel(j.Model) {
		return Errorf(CodeInvalidRequest, "model %q: want 1-128 letters, digits, '-', '_' or ':'", j.Model)
	}
	if !validSubject(j.Stream) {
		return Errorf(CodeInvalidRequest, "stream %q: want a subject without wildcards", j.Stream)
	}
	if _, err := j.EventKey.EventSigner(); err != nil {
		return err
	}
	return j.validateBody()
}

// validSubject accepts a publishable subject: non-empty tokens, no wildcards.
func validSubject(s string) bool {
	if s == "" || strings.ContainsAny(s, " \t\r\n*>") {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" {
			return false
		}
	}
	return true
}

// InferRequest is what a client sends to the Infer endpoint: a job without
// ID or stream, which the queen fills in.
type InferRequest struct {
	// ID, when set, is the job's ID: the client knows it before the first
	// event (to cancel a job still queued), and a repeat with the same ID
	// follows the job instead of running another.
	ID        string    `json:"id,omitempty"`
	Model     string    `json:"model"`
	Prompt    string    `json:"prompt,omitempty"`
	Messages  []Message `json:"messages,omitempty"`
	MaxTokens int       `json:"max_tokens,omitempty"`
	Stop      []string  `json:"stop,omitempty"`
	Sampling
	// ResponseFormat constrains the output to JSON, as OpenAI's
	// response_format; nil or type "text" leaves it free.
	ResponseFormat *ResponseFormat `json:"response_format,omitempty"`
	ToolUse
	Aux
	// Timeout bounds the whole job, queueing included, in seconds (0: the
	// queen's default).
	Timeout float64 `json:"timeout,omitempty"`
	// IdempotencyKey makes a repeated request follow the job the first
	// one started, within the idempotency window, instead of running it
	// twice.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	// Principal is set by the queen from the credentials it checked; it
	// never travels in a request, so no client can claim one.
	Principal string `json:"-"`
}

// Validate checks a request before the queen turns it into a job.
func (r *InferRequest) Validate() error {
	if r.ID != "" && !ValidID(r.ID) {
		return Errorf(CodeInvalidRequest, "id %q: want 1-128 letters, digits, '-' or '_'", r.ID)
	}
	if !ValidModel(r.Model) {
		return Errorf(CodeInvalidRequest, "model %q: want 1-128 letters, digits, '-', '_' or ':'", r.Model)
	}
	if len(r.IdempotencyKey) > MaxIdempotencyKey || strings.ContainsFunc(r.IdempotencyKey, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
		return Errorf(CodeInvalidRequest, "idempotency key: want at most %d printable characters", MaxIdempotencyKey)
	}
	if r.Timeout < 0 || r.Timeout > MaxTimeoutSeconds || r.Timeout != r.Timeout {
		return Errorf(CodeInvalidRequest, "timeout %v: want 0 to %d seconds", r.Timeout, MaxTimeoutSeconds)
	}
	j := r.Job("", "")
	return j.validateBody()
}

// Job turns the request into a job with the given ID and event stream.
func (r *InferRequest) Job(id, stream string) Job {
	return Job{
		ID: id, Model: r.Model, Stream: stream,
		Prompt: r.Prompt, Messages: r.Messages,
		MaxTokens: r.MaxTokens, Stop: r.Stop, Sampling: r.Sampling, Principal: r.Principal,
		ResponseFormat: r.ResponseFormat, ToolUse: r.ToolUse, Aux: r.Aux,
	}
}

// Aux holds the fields of the jobs that are not generations. The worker
// owns the model and its tokenizer, so embeddings and tokenization travel
// the same queue as completions. Workers that predate Kind would take
// such a job for a generation: upgrade workers before queens.
type Aux struct {
	// Kind is "" or "generate" (a generation), "embed", "tokenize" or
	// "detokenize".
	Kind string `json:"kind,omitempty"`
	// Input are the texts an embed job embeds, one vector each.
	Input []string `json:"input,omitempty"`
	// Truncate cuts an embed input longer than the context to fit it
	// instead of failing the job with context_exceeded.
	Truncate bool `json:"truncate,omitempty"`
	// AddSpecial makes a tokenize job add the model's BOS (and EOS where
	// it adds one); ParseSpecial has it match special tokens' text;
	// WithPieces asks for each token's text too.
	AddSpecial   bool `json:"add_special,omitempty"`
	ParseSpecial bool `json:"parse_special,omitempty"`
	WithPieces   bool `json:"with_pieces,omitempty"`
	// Tokens are what a detokenize job turns into text.
	Tokens []int32 `json:"tokens,omitempty"`
}

// Generates reports whether the job is a generation.
func (j *Job) Generates() bool { return j.Kind == "" || j.Kind == KindGenerate }

// validateAux checks the fields of the job's kind, and that a kind that
// does not generate carries nothing it would ignore.
func (j *Job) validateAux() error {
	a := &j.Aux
	gen := j.Prompt != "" || len(j.Messages) > 0 || len(j.Stop) > 0 || j.ResponseFormat != nil
	switch a.Kind {
	case "", KindGenerate:
		if len(a.Input) > 0 || len(a.Tokens) > 0 || a.Truncate || a.AddSpecial || a.ParseSpecial || a.WithPieces {
			return Errorf(CodeInvalidRequest, "input, tokens, truncate, add_special, parse_special and with_pieces are for the embed, tokenize and detokenize kinds")
		}
		return nil
	case KindEmbed:
		switch {
		case gen:
			return Errorf(CodeInvalidRequest, "an embed job takes input, not prompt, messages, stop or response_format")
		case len(a.Input) == 0:
			return Errorf(CodeInvalidRequest, "input is empty: an embed job needs at least one text")
		case len(a.Input) > MaxEmbedInputs:
			return Errorf(CodeInvalidRequest, "%d inputs, limit %d", len(a.Input), MaxEmbedInputs)
		case len(a.Tokens) > 0 || a.AddSpecial || a.ParseSpecial || a.WithPieces:
			return Errorf(CodeInvalidRequest, "tokens, add_special, parse_special and with_pieces are not for an embed job")
		}
		total := 0
		for i, s := range a.Input {
			if s == "" {
				return Errorf(CodeInvalidRequest, "input[%d] is empty", i)
			}
			total += len(s)
		}
		if total > MaxPromptBytes {
			return Errorf(CodeInvalidRequest, "input holds %d bytes, limit %d", total, MaxPromptBytes)
		}
	case KindTokenize:
		switch {
		case len(j.Messages) > 0 || len(j.Stop) > 0 || j.ResponseFormat != nil:
			return Errorf(CodeInvalidRequest, "a tokenize job takes prompt, not messages, stop or response_format")
		case len(a.Input) > 0 || len(a.Tokens) > 0 || a.Truncate:
			return Errorf(CodeInvalidRequest, "input, tokens and truncate are not for a tokenize job")
		}
	case KindDetokenize:
		switch {
		case gen:
			return Errorf(CodeInvalidRequest, "a detokenize job takes tokens, not prompt, messages, stop or response_format")
		case len(a.Input) > 0 || a.Truncate || a.AddSpecial || a.ParseSpecial || a.WithPieces:
			return Errorf(CodeInvalidRequest, "input, truncate, add_special, parse_special and with_pieces are not for a detokenize job")
		case len(a.Tokens) > MaxTokensLimit:
			return Errorf(CodeInvalidRequest, "%d tokens, limit %d", len(a.Tokens), MaxTokensLimit)
		}
		for i, t := range a.Tokens {
			if t < 0 {
				return Errorf(CodeInvalidRequest, "tokens[%d] is %d: token IDs are not negative", i, t)
			}
		}
	default:
		return Errorf(CodeInvalidRequest, "kind %q: want %q, %q, %q or %q", a.Kind, KindGenerate, KindEmbed, KindTokenize, KindDetokenize)
	}
	return nil
}

func (j *Job) validateBody() error {
	switch {
	case j.Prompt != "" && len(j.Messages) > 0:
		return Errorf(CodeInvalidRequest, "set prompt or messages, not both")
	case len(j.Prompt) > MaxPromptBytes:
		return Errorf(CodeInvalidRequest, "prompt is %d bytes, limit %d", len(j.Prompt), MaxPromptBytes)
	case len(j.Messages) > MaxMessages:
		return Errorf(CodeInvalidRequest, "%d messages, limit %d", len(j.Messages), MaxMessages)
	case j.MaxTokens < 0 || j.MaxTokens > MaxTokensLimit:
		return Errorf(CodeInvalidRequest, "max_tokens %d: want 0 to %d", j.MaxTokens, MaxTokensLimit)
	case len(j.Stop) > MaxStop:
		return Errorf(CodeInvalidRequest, "%d stop strings, limit %d", len(j.Stop), MaxStop)
	}
	total := 0
	for i, m := range j.Messages {
		switch m.Role {
		case "system", "user", "assistant", "tool", "developer":
		default:
			return Errorf(CodeInvalidRequest, "messages[%d].role %q: want system, user, assistant, tool or developer", i, m.Role)
		}
		total += len(m.Content)
	}
	if total > MaxPromptBytes {
		return Errorf(CodeInvalidRequest, "messages hold %d bytes, limit %d", total, MaxPromptBytes)
	}
	for i, s := range j.Stop {
		if s == "" {
			return Errorf(CodeInvalidRequest, "stop[%d] is empty", i)
		}
	}
	if err := j.ResponseFormat.Validate(); err != nil {
		return err
	}
	if err := j.validateAux(); err != nil {
		return err
	}
	if err := j.ToolUse.validate(j); err != nil {
		return err
	}
	return j.Sampling.validate()
}

// Response format types.
const (
	FormatText       = "text"
	FormatJSONObject = "json_object"
	FormatJSONSchema = "json_schema"
)

// ResponseFormat is OpenAI's response_format: "text" (no constraint),
// "json_object" (any JSON object) or "json_schema" (a value valid against
// JSONSchema.Schema). Workers compile the schema; the ones before this
// field ignore it.
type ResponseFormat struct {
	Type       string            `json:"type"`
	JSONSchema *JSONSchemaFormat `json:"json_schema,omitempty"`
}

// JSONSchemaFormat names a schema, as OpenAI's json_schema object does.
// Strict is accepted either way: rbee's output always validates.
type JSONSchemaFormat struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

var schemaName = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// Validate checks the format's shape; whether rbee can honour the schema
// is the worker's (and, wired in, the queen's) compilation to tell.
func (f *ResponseFormat) Validate() error {
	if f == nil {
		return nil
	}
	switch f.Type {
	case FormatText, FormatJSONObject:
		if f.JSONSchema != nil {
			return Errorf(CodeInvalidRequest, "response_format.json_schema is only for type %q", FormatJSONSchema)
		}
		return nil
	case FormatJSONSchema:
	default:
		return Errorf(CodeInvalidRequest, "response_format.type %q: want %q, %q or %q", f.Type, FormatText, FormatJSONObject, FormatJSONSchema)
	}
	s := f.JSONSchema
	switch {
	case s == nil:
		return Errorf(CodeInvalidRequest, "response_format of type json_schema needs json_schema")
	case !schemaName.MatchString(s.Name):
		return Errorf(CodeInvalidRequest, "response_format.json_schema.name %q: want 1-64 letters, digits, '_' or '-'", s.Name)
	case len(s.Schema) > MaxSchemaBytes:
		return Errorf(CodeInvalidRequest, "response_format.json_schema.schema is %d bytes, limit %d", len(s.Schema), MaxSchemaBytes)
	case len(s.Schema) == 0:
		return Errorf(CodeInvalidRequest, "response_format.json_schema.schema is missing")
	case !json.Valid(s.Schema):
		return Errorf(CodeInvalidRequest, "response_format.json_schema.schema is not valid JSON")
	}
	return nil
}

func (s *Sampling) validate() error {
	check := func(name string, v, lo, hi float64) error {
		if v < lo || v > hi || v != v {
			return Errorf(CodeInvalidRequest, "%s %v: want %v to %v", name, v, lo, hi)
		}
		return nil
	}
	if s.Temperature != nil {
		if err := check("temperature", *s.Temperature, 0, 10); err != nil {
			return err
		}
	}
	if s.TopK < 0 {
		return Errorf(CodeInvalidRequest, "top_k %d: want 0 or more", s.TopK)
	}
	for _, c := range []struct {
		name      string
		v, lo, hi float64
	}{
		{"top_p", s.TopP, 0, 1},
		{"min_p", s.MinP, 0, 1},
		{"repeat_penalty", s.RepeatPenalty, 0, 10},
		{"presence_penalty", s.PresencePenalty, -2, 2},
		{"frequency_penalty", s.FrequencyPenalty, -2, 2},
	} {
		if err := check(c.name, c.v, c.lo, c.hi); err != nil {
			return err
		}
	}
	if s.Logprobs != nil && (*s.Logprobs < 0 || *s.Logprobs > MaxTopLogprobs) {
		return Errorf(CodeInvalidRequest, "logprobs %d: want 0 to %d alternatives", *s.Logprobs, MaxTopLogprobs)
	}
	if s.N < 0 || s.N > MaxChoices {
		return Errorf(CodeInvalidRequest, "n %d: want 1 to %d choices", s.N, MaxChoices)
	}
	if len(s.LogitBias) > MaxLogitBias {
		return Errorf(CodeInvalidRequest, "logit_bias names %d tokens, limit %d", len(s.LogitBias), MaxLogitBias)
	}
	for id, b := range s.LogitBias {
		if id < 0 {
			return Errorf(CodeInvalidRequest, "logit_bias: token %d is negative", id)
		}
		if err := check(fmt.Sprintf("logit_bias[%d]", id), b, -100, 100); err != nil {
			return err
		}
	}
	return nil
}

// String is a short description for logs.
func (j *Job) String() string { return fmt.Sprintf("job %s (%s)", j.ID, j.Model) }
