package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/sample"
)

type generateOutput struct {
	PromptIDs             []int32     `json:"prompt_ids"`
	GeneratedIDs          []int32     `json:"generated_ids"`
	Text                  string      `json:"text"`
	StopReason            string      `json:"stop_reason"`
	PromptTokensPerSecond float64     `json:"prompt_tokens_per_second"`
	DecodeTokensPerSecond float64     `json:"decode_tokens_per_second"`
	TimeToFirstTokenMs    float64     `json:"time_to_first_token_ms"`
	Logits                [][]float32 `json:"logits,omitempty"`
}

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("generate", stderr)
	var (
		modelPath = fs.String("model", "", "GGUF model file (required)")
		prompt    = fs.String("prompt", "", "prompt text")
		maxTokens = fs.Int("max-tokens", 256, "tokens to generate at most")
		temp      = fs.Float64("temperature", 0.8, "sampling temperature; 0 is greedy")
		topK      = fs.Int("top-k", 40, "keep the k most likely tokens (0: off)")
		topP      = fs.Float64("top-p", 0.95, "nucleus sampling threshold (1: off)")
		minP      = fs.Float64("min-p", 0.05, "drop tokens below this fraction of the top probability (0: off)")
		repeat    = fs.Float64("repeat-penalty", 1, "penalty for repeated tokens (1: off)")
		seed      = fs.Int64("seed", -1, "random seed; -1 picks one")
		ctxLen    = fs.Int("ctx", 0, "context length in tokens (0: the model's own)")
		threads   = fs.Int("threads", 0, "threads (0: one per CPU)")
		asJSON    = fs.Bool("json", false, "print one JSON object at the end instead of streaming text")
		logits    = fs.Int("logits", 0, "with --json, include the full logits of the first N steps")
	)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *logits < 0 || *logits > 0 && !*asJSON {
		return usageError{errors.New("generate: --logits takes a count of steps >= 0, and needs --json")}
	}
	if *modelPath == "" {
		return usageError{errors.New("generate: --model is required")}
	}
	params := sample.Params{
		Temperature: float32(*temp), TopK: *topK, TopP: float32(*topP), MinP: float32(*minP),
		RepeatPenalty: float32(*repeat),
	}
	if *seed >= 0 {
		params.Seed, params.HasSeed = uint64(*seed), true
	}
	if err := params.Validate(); err != nil {
		return usageError{fmt.Errorf("generate: %w", err)}
	}
	m, err := infer.Load(*modelPath, infer.Options{Threads: *threads, Logger: newLogger(stderr, "warn")})
	if err != nil {
		return err
	}
	defer m.Close()
	s, err := m.NewSession(*ctxLen)
	if err != nil {
		return err
	}
	res, err := s.Generate(ctx, infer.Request{Prompt: *prompt, MaxTokens: *maxTokens, Sampling: params, LogitSteps: *logits},
		func(t infer.Token) error {
			if *asJSON {
				return nil
			}
			_, err := io.WriteString(stdout, t.Text)
			return err
		})
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	if !*asJSON {
		_, err := fmt.Fprintln(stdout)
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(generateOutput{
		PromptIDs: res.PromptIDs, GeneratedIDs: res.GeneratedIDs, Text: res.Text, StopReason: res.StopReason,
		PromptTokensPerSecond: res.Timings.PromptTokensPerSecond(),
		DecodeTokensPerSecond: res.Timings.DecodeTokensPerSecond(),
		TimeToFirstTokenMs:    float64(res.Timings.TimeToFirstToken.Microseconds()) / 1000,
		Logits:                res.Logits,
	})
}
