package schemas

// EventType says what a token-stream message carries.
type EventType string

// A job's reply subject receives zero or more token events, then exactly one
// end or error event, then an empty message that closes the stream.
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

// Event is one message on a job's reply subject. Seq starts at 0 and grows by
// one per message, so a receiver can tell a gap (core NATS is at-most-once).
type Event struct {
	JobID    string    `json:"job_id"`
	Seq      int       `json:"seq"`
	Type     EventType `json:"type"`
	WorkerID string    `json:"worker_id,omitempty"`

	// Token events.
	Text    string `json:"text,omitempty"`
	TokenID *int32 `json:"token_id,omitempty"`

	// End events.
	StopReason string   `json:"stop_reason,omitempty"`
	Usage      *Usage   `json:"usage,omitempty"`
	Timings    *Timings `json:"timings,omitempty"`

	// Error events.
	Error *Error `json:"error,omitempty"`
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

// Validate checks an event read from the wire.
func (e *Event) Validate() error {
	if e.Seq < 0 {
		return Errorf(CodeInvalidRequest, "seq %d is negative", e.Seq)
	}
	switch e.Type {
	case EventToken:
		if e.TokenID == nil {
			return Errorf(CodeInvalidRequest, "token event without token_id")
		}
	case EventEnd:
		if e.Usage == nil {
			return Errorf(CodeInvalidRequest, "end event without usage")
		}
		if e.StopReason != StopReasonStop && e.StopReason != StopReasonLength {
			return Errorf(CodeInvalidRequest, "stop_reason %q: want stop or length", e.StopReason)
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
