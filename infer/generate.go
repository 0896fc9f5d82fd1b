package infer

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/infer/sample"
)

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
}

// Token is one generated token (ID -1 for a last piece of held-back text
// that belongs to no new token). Text holds what may be shown now: it is
// empty while bytes of a multi-byte character or a possible stop string are
// held back, and carries them with a later token.
type Token struct {
	ID   int32
	Text string
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

// Generate runs req on the session, calling emit for each sampled token. It
// stops at an end-of-generation token, a stop string, MaxTokens, a full
// context, an error from emit, or when ctx is done (then it returns
// ctx.Err() with the partial result). The session's cache keeps the longest
// prefix it shares with the new prompt.
func (s *Session) Generate(ctx context.Context, req Request, emit func(Token) error) (Result, error) {
	start := time.Now()
	var res Result
	prompt := req.Prompt
	if len(req.Messages) > 0 {
		rendered, err := s.m.RenderChat(req.Messages)
		if err != nil {
			return res, err
		}
		prompt = rendered
	}
	ids, err := s.m.tokenize(prompt, len(req.Messages) > 0)
	if err != nil {
		return res, err
	}
	res.PromptIDs = ids
	if len(ids) >= s.ctxLen {
		return res, fmt.Errorf("%w: the prompt has %d tokens, the context holds %d", ErrContextExceeded, len(ids), s.ctxLen)
	}
	sampler, err := sample.New(req.Sampling, s.m.hp.VocabSize)
	if err != nil {
		return res, fmt.Errorf("sampling: %w", err)
	}
	for _, id := range ids {
		sampler.Accept(id)
	}

	for _, id := range ids[s.reuse(ids):] {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := s.forward(id); err != nil {
			return res, err
		}
		res.Timings.PromptTokens++
	}
	res.Timings.PromptDuration = time.Since(start)

	decoder := s.m.tok.NewStreamDecoder()
	if prompt == "" {
		decoder.StartOfText()
	}
	stops := sample.NewStopMatcher(req.Stop)
	var text strings.Builder
	// Partial results keep the text generated so far.
	finish := func(err error) (Result, error) {
		res.Text = text.String()
		return res, err
	}
	maxTokens := req.MaxTokens
	if maxTokens <= 0 {
		maxTokens = s.ctxLen
	}
	res.StopReason = StopLength
	stoppedByString := false
	var firstAt time.Time
	for len(res.GeneratedIDs) < maxTokens {
		if len(res.Logits) < req.LogitSteps {
			res.Logits = append(res.Logits, slices.Clone(s.logits))
		}
		id := sampler.Sample(s.logits)
		if len(res.GeneratedIDs) == 0 {
			firstAt = time.Now()
			res.Timings.TimeToFirstToken = firstAt.Sub(start)
		}
		if s.m.tok.IsEOG(id) {
			res.StopReason = StopEOG
			break
		}
		sampler.Accept(id)
		res.GeneratedIDs = append(res.GeneratedIDs, id)
		piece, stopped := stops.Push(decoder.Add(id))
		text.WriteString(piece)
		if err := emit(Token{ID: id, Text: piece}); err != nil {
			return finish(err)
		}
		if stopped {
			res.StopReason, stoppedByString = StopEOG, true
			break
		}
		if len(res.GeneratedIDs) == maxTokens || len(s.cached) >= s.ctxLen {
			break
		}
		if err := ctx.Err(); err != nil {
			return finish(err)
		}
		if err := s.forward(id); err != nil {
			return finish(err)
		}
	}
	res.Timings.GeneratedTokens = len(res.GeneratedIDs)
	if !firstAt.IsZero() {
		res.Timings.DecodeDuration = time.Since(firstAt)
	}
	if !stoppedByString {
		// Held-back text is real output once no stop string can complete it.
		held, _ := stops.Push(decoder.Flush())
		if tail := held + stops.Flush(); tail != "" {
			text.WriteString(tail)
			if err := emit(Token{ID: -1, Text: tail}); err != nil {
				return finish(err)
			}
		}
	}
	return finish(nil)
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
