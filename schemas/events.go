package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// EventType says what a token-stream message carries.
type EventType string

// A job's events (its subject in the events stream, Job.Stream) are zero or
// more token events, then exactly one end or error event, which ends it.
const (
	EventToken EventType = "token"
	EventEnd   EventType = "end"
	EventError EventType = "error"
)

// Stop reasons, named as OpenAI names its finish_reason values.
const (
	StopReasonStop   = "stop"
	StopReasonLength = "length"
)

// Event is one event of a job. Seq starts at 0 and grows by one per event,
// across every delivery of the job: a worker that takes a job over goes on
// from the seq after the last one in the stream, so a reader sees one
// unbroken sequence. Delivery is the job's delivery number (1 for the first
// worker, then one more per takeover): among events of the same seq, only
// the newest delivery's count.
type Event struct {
	JobID    string    `json:"job_id"`
	Seq      int       `json:"seq"`
	Type     EventType `json:"type"`
	Delivery int       `json:"delivery"`
	WorkerID string    `json:"worker_id,omitempty"`

	// Token events.
	Text    string `json:"text,omitempty"`
	TokenID *int32 `json:"token_id,omitempty"`
	// Index is the choice the token belongs to, for a job with more than
	// one (Sampling.N).
	Index int `json:"index,omitempty"`
	// Logprobs is the token's, when the job asked (Sampling.Logprobs).
	Logprobs *TokenLogprobs `json:"logprobs,omitempty"`

	// End events.
	StopReason string `json:"stop_reason,omitempty"`
	// StopReasons, for a job with more than one choice, is each choice's
	// (StopReason is the first's); usage counts the prompt once and every
	// choice's tokens.
	StopReasons []string `json:"stop_reasons,omitempty"`
	// ToolCalls are the calls the first choice's answer made (stop reason
	// tool_calls), parsed by the worker, which knows the template.
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
	Usage     *Usage     `json:"usage,omitempty"`
	Timings   *Timings   `json:"timings,omitempty"`

	// End events of the jobs that do not generate (Job.Kind): an embed
	// job's vectors, one per input in order; a tokenize job's tokens (and
	// their pieces when asked for); a detokenize job's text. They come
	// whole in the one end event, so a worker refuses an embed job whose
	// vectors would not fit in a message.
	Embeddings [][]float32 `json:"embeddings,omitempty"`
	Tokens     []int32     `json:"tokens,omitempty"`
	Pieces     []string    `json:"pieces,omitempty"`
	Content    string      `json:"content,omitempty"`

	// Error events.
	Error *Error `json:"error,omitempty"`
}

// TokenLogprobs is a sampled token's log-probability, its bytes (which
// may be part of a UTF-8 character) and the most likely alternatives at
// its step, most likely first.
type TokenLogprobs struct {
	Logprob float64      `json:"logprob"`
	Bytes   []byte       `json:"bytes"`
	Top     []TopLogprob `json:"top,omitempty"`
}

// TopLogprob is one alternative of a step.
type TopLogprob struct {
	TokenID int32   `json:"token_id"`
	Bytes   []byte  `json:"bytes"`
	Logprob float64 `json:"logprob"`
}

// Usage counts tokens the way OpenAI's usage object does.
type Usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

// Timings are the engine's measurements of one job.
type Timings struct {
	QueueMillis        float64 `json:"queue_ms"`
	TimeToFirstMillis  float64 `json:"time_to_first_token_ms"`
	PromptTokensPerSec float64 `json:"prompt_tokens_per_second"`
	DecodeTokensPerSec float64 `json:"decode_tokens_per_second"`
	TotalMillis        float64 `json:"total_ms"`
}

// Terminal reports whether the event ends its job's events.
func (e *Event) Terminal() bool { return e.Type == EventEnd || e.Type == EventError }

// Validate checks an event read from the wire.
func (e *Event) Validate() error {
	if e.Seq < 0 {
		return Errorf(CodeInvalidRequest, "seq %d is negative", e.Seq)
	}
	if e.Delivery < 1 {
		return Errorf(CodeInvalidRequest, "delivery %d: want 1 or more", e.Delivery)
	}
	switch e.Type {
	case EventToken:
		if e.TokenID == nil {
			return Errorf(CodeInvalidRequest, "token event without token_id")
		}
		if e.Index < 0 || e.Index >= MaxChoices {
			return Errorf(CodeInvalidRequest, "index %d: want 0 to %d", e.Index, MaxChoices-1)
		}
	case EventEnd:
		if e.Usage == nil {
			return Errorf(CodeInvalidRequest, "end event without usage")
		}
		for _, r := range append([]string{e.StopReason}, e.StopReasons...) {
			if r != StopReasonStop && r != StopReasonLength && r != StopReasonToolCalls {
				return Errorf(CodeInvalidRequest, "stop_reason %q: want stop, length or tool_calls", r)
			}
		}
	case EventError:
		if e.Error == nil || e.Error.Code == "" {
			return Errorf(CodeInvalidRequest, "error event without error code")
		}
	default:
		return Errorf(CodeInvalidRequest, "event type %q: want token, end or error", e.Type)
	}
	return nil
}

// decodeEventJSON reads one event line with encoding/json, strictly: a
// field it does not know is an error.
func decodeEventJSON(line []byte, ev *Event) error {
	*ev = Event{}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	return dec.Decode(ev)
}

// MaxEventsPerMessage bounds the events one message carries: a worker that
// produces tokens faster than the stream takes them sends them together.
const MaxEventsPerMessage = 1024

// EncodeEvents writes events as one message body: one JSON object a line.
func EncodeEvents(events []Event) ([]byte, error) {
	b := make([]byte, 0, 192*len(events))
	for i := range events {
		var err error
		if b, err = events[i].appendJSON(b); err != nil {
			return nil, fmt.Errorf("encode event %d: %w", events[i].Seq, err)
		}
		b = append(b, '\n')
	}
	return b, nil
}

// DecodeEvents reads a message body written by EncodeEvents, validating every
// event, and appends them to dst. It fails on anything else: an empty body,
// a line that is not an event, more than MaxEventsPerMessage events.
func DecodeEvents(dst []Event, data []byte) ([]Event, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return dst, Errorf(CodeInvalidRequest, "empty event message")
	}
	dst = slices.Grow(dst, min(bytes.Count(data, []byte{'\n'})+1, MaxEventsPerMessage))
	n := 0
	for line := range bytes.Lines(data) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if n++; n > MaxEventsPerMessage {
			return dst, Errorf(CodeInvalidRequest, "more than %d events in one message", MaxEventsPerMessage)
		}
		ev, ok := decodePlainEvent(line)
		if !ok {
			if err := decodeEventJSON(line, &ev); err != nil {
				return dst, Errorf(CodeInvalidRequest, "event %d of the message: %v", n, err)
			}
		}
		if err := ev.Validate(); err != nil {
			return dst, err
		}
		dst = append(dst, ev)
	}
	return dst, nil
}
