package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/tokenizer"
)

// benchStory is the text prompts are cut from.
const benchStory = `Once upon a time there was a little girl named Lily who lived in a small house near the woods.
Every morning she walked to the river with her dog Max to look at the fish and the birds. One day
she found a shiny red stone under a big old tree. She put it in her pocket and ran home to show her
mother. Her mother smiled and told her that the stone was very special because it came from the
mountain far away. Lily wanted to see the mountain, so the next day she packed some bread and an
apple and set off with Max. They climbed over rocks, crossed a wooden bridge and sang songs until
the sun went down. At the top they saw the whole valley, the river, the woods and their own little
house, and Lily was happy.`

// exactPrompt returns a piece of benchStory (starting further in for each
// variant) that tok encodes, BOS included, as exactly n tokens.
func exactPrompt(tok *tokenizer.Tokenizer, n, variant int) (string, error) {
	count := func(s string) (int, error) {
		ids, err := tok.Encode(s, true, false)
		return len(ids), err
	}
	words := strings.Fields(benchStory)
	start := variant * 11 % len(words)
	text := ""
	for i := 0; i < 4*n; i++ {
		w := words[(start+i)%len(words)]
		cand := w
		if text != "" {
			cand = text + " " + w
		}
		c, err := count(cand)
		if err != nil {
			return "", err
		}
		if c == n {
			return cand, nil
		}
		if c > n {
			break
		}
		text = cand
	}
	// Short of n: pad with short pieces, each adding at least one token.
	fillers := []string{" a", " I", "a", "I", ".", ",", "!", " the"}
	for range n {
		cur, err := count(text)
		if err != nil {
			return "", err
		}
		grown := false
		for _, f := range fillers {
			c, err := count(text + f)
			if err != nil {
				return "", err
			}
			if c == n {
				return text + f, nil
			}
			if c > cur && c < n {
				text, grown = text+f, true
				break
			}
		}
		if !grown {
			break
		}
	}
	return "", fmt.Errorf("cannot build a prompt of exactly %d tokens", n)
}

// engineRun is one timed generation.
type engineRun struct {
	PromptTokens int     `json:"prompt_tokens"`
	PromptTPS    float64 `json:"prompt_tokens_per_second"`
	Generated    int     `json:"generated_tokens"`
	DecodeTPS    float64 `json:"decode_tokens_per_second"`
	StopReason   string  `json:"stop_reason"`
}

// engineResult is one model's in-process figures: the best of its runs.
type engineResult struct {
	benchModel
	FileBytes         int64       `json:"file_bytes"`
	WeightBytes       int64       `json:"weight_bytes"` // read per decoded token
	Threads           int         `json:"threads"`
	PromptTokens      int         `json:"prompt_tokens"`
	DecodeTokens      int         `json:"decode_tokens_requested"`
	Generated         int         `json:"decode_tokens_generated"` // fewest over the runs
	Prompt            string      `json:"prompt"`
	Runs              []engineRun `json:"runs"`
	PromptTPS         float64     `json:"prompt_tokens_per_second"`
	DecodeTPS         float64     `json:"decode_tokens_per_second"`
	BandwidthGBps     float64     `json:"bandwidth_gbps,omitempty"`     // the run's read bandwidth at Threads
	BandwidthFraction float64     `json:"bandwidth_fraction,omitempty"` // WeightBytes x DecodeTPS / bandwidth
}

// measureEngine loads bm with the configured threads and times a greedy
// generation of DecodeTokens after a prompt of exactly PromptTokens, up to
// Runs times while the budget lasts, keeping the best rates.
func measureEngine(ctx context.Context, bm benchModel, cfg benchConfig) (engineResult, error) {
	r := engineResult{benchModel: bm, Threads: cfg.Threads, PromptTokens: cfg.PromptTokens, DecodeTokens: cfg.DecodeTokens}
	var err error
	if r.WeightBytes, r.FileBytes, err = weightBytes(bm.Path); err != nil {
		return r, err
	}
	if err := warmPageCache(bm.Path); err != nil {
		return r, fmt.Errorf("read %s: %w", bm.Path, err)
	}
	m, err := infer.Load(bm.Path, infer.Options{Threads: cfg.Threads})
	if err != nil {
		return r, err
	}
	defer m.Close()
	s, err := m.NewSession(cfg.PromptTokens + cfg.DecodeTokens + 1)
	if err != nil {
		return r, err
	}
	generate := func(prompt string) (engineRun, error) {
		s.Reset() // every run evaluates its whole prompt
		res, err := s.Generate(ctx, infer.Request{Prompt: prompt, MaxTokens: cfg.DecodeTokens}, func(infer.Token) error { return nil })
		if err != nil {
			return engineRun{}, fmt.Errorf("generate: %w", err)
		}
		if len(res.PromptIDs) != cfg.PromptTokens || res.Timings.PromptTokens != cfg.PromptTokens {
			return engineRun{}, fmt.Errorf("the prompt has %d tokens (%d evaluated), want %d",
				len(res.PromptIDs), res.Timings.PromptTokens, cfg.PromptTokens)
		}
		return engineRun{
			PromptTokens: res.Timings.PromptTokens, PromptTPS: res.Timings.PromptTokensPerSecond(),
			Generated: res.Timings.GeneratedTokens, DecodeTPS: res.Timings.DecodeTokensPerSecond(),
			StopReason: res.StopReason,
		}, nil
	}

	// Greedy decoding stops at an end-of-generation token: look for a prompt
	// that decodes the full length (or keep the one that got furthest).
	start := time.Now()
	for variant := range 4 {
		p, err := exactPrompt(m.Tokenizer(), cfg.PromptTokens, variant)
		if err != nil {
			return r, err
		}
		run, err := generate(p)
		if err != nil {
			return r, err
		}
		if len(r.Runs) == 0 || run.Generated > r.Runs[0].Generated {
			r.Prompt, r.Runs = p, []engineRun{run}
		}
		if run.Generated == cfg.DecodeTokens {
			break
		}
	}
	for len(r.Runs) < cfg.Runs && time.Since(start).Seconds() < cfg.Budget {
		run, err := generate(r.Prompt)
		if err != nil {
			return r, err
		}
		r.Runs = append(r.Runs, run)
	}
	r.Generated = r.Runs[0].Generated
	for _, run := range r.Runs {
		r.PromptTPS = max(r.PromptTPS, run.PromptTPS)
		r.DecodeTPS = max(r.DecodeTPS, run.DecodeTPS)
		r.Generated = min(r.Generated, run.Generated)
	}
	return r, nil
}

// seqOutput is one sequence of a concurrent decode: the ids it generated
// and when each was sampled.
type seqOutput struct {
	IDs   []int32
	Times []time.Time
}

// decodeConcurrent generates greedily from every prompt at the same time,
// up to maxTokens each. It is the one place that says how concurrent
// sequences share the engine: the worker's way, one batched engine driven
// by a scheduler (continuous batching), every prompt submitted at once.
func decodeConcurrent(ctx context.Context, m *infer.Model, prompts []string, maxTokens int) ([]seqOutput, error) {
	ctxLen, err := contextFor(m, prompts, maxTokens)
	if err != nil {
		return nil, err
	}
	e, err := m.NewEngine(infer.EngineConfig{MaxSequences: len(prompts), ContextLength: ctxLen})
	if err != nil {
		return nil, err
	}
	sched := infer.NewScheduler(e)
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { sched.Run(runCtx) })
	defer func() {
		stop()
		running.Wait()
	}()

	out := make([]seqOutput, len(prompts))
	errs := make([]error, len(prompts))
	begin := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() {
			o := seqOutput{IDs: make([]int32, 0, maxTokens), Times: make([]time.Time, 0, maxTokens)}
			<-begin
			// emit runs on the scheduler's goroutine, one sequence at a time.
			_, err := sched.Generate(ctx, infer.Request{Prompt: p, MaxTokens: maxTokens}, func(t infer.Token) error {
				if t.ID >= 0 {
					o.IDs = append(o.IDs, t.ID)
					o.Times = append(o.Times, time.Now())
				}
				return nil
			})
			if err != nil {
				errs[i] = fmt.Errorf("sequence %d: %w", i, err)
			}
			out[i] = o
		})
	}
	close(begin)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// contextFor is a context length that holds the longest prompt and
// maxTokens more.
func contextFor(m *infer.Model, prompts []string, maxTokens int) (int, error) {
	longest := 0
	for _, p := range prompts {
		ids, err := m.Tokenizer().Encode(p, true, false)
		if err != nil {
			return 0, fmt.Errorf("tokenize %q: %w", p, err)
		}
		longest = max(longest, len(ids))
	}
	return longest + maxTokens + 1, nil
}

// concurrentLevel is the aggregate decode rate of N sequences at once.
type concurrentLevel struct {
	Sequences int `json:"sequences"`
	Generated int `json:"generated_tokens"` // all sequences together
	// TokensPerSecond counts the tokens sampled while every sequence was
	// decoding (from the last first token to the first last token), so
	// that prompts and stragglers do not dilute it.
	TokensPerSecond float64 `json:"aggregate_decode_tokens_per_second"`
	WallTPS         float64 `json:"wall_tokens_per_second"` // all tokens over first token to last
	MatchSolo       bool    `json:"ids_match_solo"`
	Mismatches      []int   `json:"mismatched_sequences,omitempty"`
}

type concurrentResult struct {
	Model     benchModel        `json:"model"`
	Threads   int               `json:"threads"`
	MaxTokens int               `json:"max_tokens"`
	Prompts   []string          `json:"prompts"`
	SoloIDs   [][]int32         `json:"solo_ids"`
	Levels    []concurrentLevel `json:"levels"`
	MatchSolo bool              `json:"ids_match_solo"`
}

// benchPrompts are short distinct prompts for concurrent sequences.
func benchPrompts(n int) []string {
	starts := []string{"Once upon a time", "The little dog", "One day Lily", "In the big forest",
		"Tom and his friend", "The sun was shining", "A small bird", "Max wanted to"}
	out := make([]string, n)
	for i := range out {
		out[i] = starts[i%len(starts)]
		if i >= len(starts) {
			out[i] += fmt.Sprintf(" (%d)", i/len(starts))
		}
	}
	return out
}

// measureConcurrent decodes 1, 4 and 8 (cfg.Seqs) sequences at once and
// checks every sequence's ids against the same prompt decoded alone.
func measureConcurrent(ctx context.Context, bm benchModel, cfg benchConfig) (*concurrentResult, error) {
	if err := warmPageCache(bm.Path); err != nil {
		return nil, fmt.Errorf("read %s: %w", bm.Path, err)
	}
	m, err := infer.Load(bm.Path, infer.Options{Threads: cfg.Threads})
	if err != nil {
		return nil, err
	}
	defer m.Close()
	r := &concurrentResult{Model: bm, Threads: cfg.Threads, MaxTokens: cfg.SeqTokens,
		Prompts: benchPrompts(slices.Max(cfg.Seqs)), MatchSolo: true}
	// The oracle: each prompt alone, on a session of its own.
	ctxLen, err := contextFor(m, r.Prompts, cfg.SeqTokens)
	if err != nil {
		return nil, err
	}
	s, err := m.NewSession(ctxLen)
	if err != nil {
		return nil, err
	}
	for _, p := range r.Prompts {
		s.Reset()
		res, err := s.Generate(ctx, infer.Request{Prompt: p, MaxTokens: cfg.SeqTokens}, func(infer.Token) error { return nil })
		if err != nil {
			return nil, fmt.Errorf("solo %q: %w", p, err)
		}
		r.SoloIDs = append(r.SoloIDs, res.GeneratedIDs)
	}
	for _, n := range cfg.Seqs {
		seqs, err := decodeConcurrent(ctx, m, r.Prompts[:n], cfg.SeqTokens)
		if err != nil {
			return nil, fmt.Errorf("%d sequences: %w", n, err)
		}
		lv := concurrentLevel{Sequences: n, MatchSolo: true}
		for i, sq := range seqs {
			lv.Generated += len(sq.IDs)
			if !slices.Equal(sq.IDs, r.SoloIDs[i]) {
				lv.MatchSolo = false
				lv.Mismatches = append(lv.Mismatches, i)
			}
		}
		lv.TokensPerSecond, lv.WallTPS = aggregateRate(seqs)
		r.MatchSolo = r.MatchSolo && lv.MatchSolo
		r.Levels = append(r.Levels, lv)
	}
	return r, nil
}

// aggregateRate is the rate over the window in which every sequence was
// decoding (between the latest first token and the earliest last one), and
// the rate of all tokens after the first over the whole span. With no such
// window (a sequence ended before another began) the first is the second.
func aggregateRate(seqs []seqOutput) (window, wall float64) {
	var t0, t1, first, last time.Time
	total := 0
	for _, s := range seqs {
		if len(s.Times) == 0 {
			continue
		}
		a, b := s.Times[0], s.Times[len(s.Times)-1]
		if total == 0 {
			t0, t1, first, last = a, b, a, b
		}
		t0, t1 = later(t0, a), earlier(t1, b)
		first, last = earlier(first, a), later(last, b)
		total += len(s.Times)
	}
	if d := last.Sub(first); d > 0 {
		wall = float64(total-1) / d.Seconds()
	}
	if !t1.After(t0) {
		return wall, wall
	}
	n := 0
	for _, s := range seqs {
		for _, t := range s.Times {
			if t.After(t0) && !t.After(t1) {
				n++
			}
		}
	}
	if n < len(seqs) {
		return wall, wall
	}
	return float64(n) / t1.Sub(t0).Seconds(), wall
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func earlier(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
