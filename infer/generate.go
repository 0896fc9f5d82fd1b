package infer

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/infer/grammar"
	"github.com/rbee-dev/rbee/infer/sample"
)

// ErrSampling is wrapped when a request's sampling parameters do not fit
// the model (a logit_bias for a token outside its vocabulary, say).
var ErrSampling = errors.New("sampling parameters")

// Stop reasons reported in Result.
const (
	StopEOG    = "stop"   // an end-of-generation token or a stop string
	StopLength = "length" // max tokens reached or the context is full
)

// Request is one generation. Exactly one of Prompt and Messages is used:
// Messages are rendered with the model's chat template.
type Request struct {
	Prompt    string
	Messages  []chat.Message
	MaxTokens int // 0: until the context is full
	Sampling  sample.Params
	Stop      []string
	// LogitSteps asks for the full logits of the first LogitSteps sampling steps in Result.Logits.
	LogitSteps int
	// Grammar, when set, constrains the output to the values it accepts
	// (see infer/grammar): tokens it does not allow are never sampled, and
	// the generation ends once the value is complete.
	Grammar *grammar.Grammar
	// Tools are OpenAI tool objects, rendered through the chat template's
	// tools variable (Messages only).
	Tools []json.RawMessage
	// AnswerPrefix is appended to the rendered chat: the answer is forced
	// to begin with it (a tool call's opening tag), and it is not output.
	AnswerPrefix string
	// Logprobs asks for each token's log-probability and its TopLogprobs
	// (0 to sample.MaxTopLogprobs) most likely alternatives on Token.
	Logprobs    bool
	TopLogprobs int
	// Resume holds tokens an earlier run of this request already generated:
	// they are taken as output without being emitted, and generation goes
	// on after them exactly as that run would have with the same seed.
	Resume []int32
}

// Token is one generated token (ID -1 for a last piece of held-back text
// that belongs to no new token). Text holds what may be shown now: it is
// empty while bytes of a multi-byte character or a possible stop string are
// held back, and carries them with a later token.
type Token struct {
	ID   int32
	Text string
	// Logprobs is set when the request asked for them, on every token
	// but a held-back tail's (ID -1).
	Logprobs *Logprobs
}

// Logprobs is a sampled token's log-probability under the distribution it
// was drawn from (after penalties, bias and grammar; at temperature 1, see
// sample.Logprobs), with its bytes and the most likely alternatives.
type Logprobs struct {
	Logprob float32
	Bytes   []byte
	Top     []Alternative
}

// Alternative is one of the most likely tokens at a step.
type Alternative struct {
	ID      int32
	Bytes   []byte
	Logprob float32
}

// Timings measure one generation.
type Timings struct {
	PromptTokens     int           // tokens evaluated for the prompt (cached ones excluded)
	GeneratedTokens  int           // tokens sampled
	PromptDuration   time.Duration // evaluating the prompt
	DecodeDuration   time.Duration // evaluating generated tokens
	TimeToFirstToken time.Duration // from the call to the first sampled token
}

// PromptTokensPerSecond is the prompt evaluation rate.
func (t Timings) PromptTokensPerSecond() float64 { return rate(t.PromptTokens, t.PromptDuration) }

// DecodeTokensPerSecond is the generation rate after the first token.
func (t Timings) DecodeTokensPerSecond() float64 {
	return rate(max(t.GeneratedTokens-1, 0), t.DecodeDuration)
}

func rate(n int, d time.Duration) float64 {
	if n == 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Result is the outcome of a generation.
type Result struct {
	PromptIDs    []int32
	GeneratedIDs []int32
	Text         string
	StopReason   string
	Timings      Timings
	Logits       [][]float32 // the first Request.LogitSteps steps' logits, before sampling
}

// tokenize encodes a prompt. A rendered chat may name special tokens (and
// often starts with BOS itself), so those are parsed and a doubled BOS is
// dropped.
func (m *Model) tokenize(prompt string, parseSpecial bool) ([]int32, error) {
	ids, err := m.tok.Encode(prompt, true, parseSpecial)
	if err != nil {
		return nil, fmt.Errorf("tokenize: %w", err)
	}
	if bos := m.tok.BOS(); len(ids) >= 2 && bos >= 0 && ids[0] == bos && ids[1] == bos {
		ids = ids[1:]
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("tokenize: the prompt is empty and the model adds no BOS token")
	}
	return ids, nil
}
