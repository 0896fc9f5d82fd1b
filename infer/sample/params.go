// Package sample picks the next token from a model's logits and watches the
// decoded text for stop strings.
//
// The sampler follows llama.cpp's common sampler chain, in this order:
// repetition/frequency/presence penalties, top-k, top-p, min-p, temperature,
// softmax, and a draw from a seeded PCG generator owned by the sampler.
// Temperature 0 is greedy decoding: the argmax after penalties, ties going
// to the lowest token id.
package sample

import (
	"errors"
	"fmt"
	"math"
)

// DefaultRepeatLastN is the penalty window used when Params.RepeatLastN is 0.
const DefaultRepeatLastN = 64

// MaxRepeatLastN bounds the penalty window; it is larger than any model's
// context and keeps a bad request from allocating without limit.
const MaxRepeatLastN = 1 << 20

// Params configures a Sampler. The zero value is greedy decoding with no
// penalties.
type Params struct {
	// Temperature divides the logits before the softmax; 0 means greedy
	// (argmax, ties to the lowest id).
	Temperature float32
	// TopK keeps the K most likely tokens; 0 turns it off.
	TopK int
	// TopP keeps the smallest set of most likely tokens whose probability
	// (at temperature 1, after top-k) reaches TopP; 0 or 1 turns it off.
	TopP float32
	// MinP drops tokens whose probability is below MinP times that of the
	// most likely token; 0 turns it off.
	MinP float32

	// RepeatPenalty divides positive logits and multiplies negative ones of
	// every token seen in the last RepeatLastN accepted tokens; 0 or 1 turns
	// it off.
	RepeatPenalty float32
	// RepeatLastN is the penalty window in tokens; 0 means DefaultRepeatLastN.
	RepeatLastN int
	// PresencePenalty is subtracted once from the logit of every token in
	// the window. Negative values encourage repetition, as in the OpenAI API.
	PresencePenalty float32
	// FrequencyPenalty is subtracted from a token's logit once per
	// occurrence in the window. Negative values encourage repetition.
	FrequencyPenalty float32
	// LogitBias is added to the logits of the tokens it names before the
	// penalties, as OpenAI's logit_bias; -100 or 100 all but bans or
	// forces a token.
	LogitBias map[int32]float32

	// Seed makes sampling reproducible when HasSeed is set: the same seed,
	// parameters and inputs give the same tokens. Without it the sampler
	// picks a random seed.
	Seed    uint64
	HasSeed bool
}

// Validate reports every parameter that is out of range, in one error.
func (p Params) Validate() error {
	var errs []error
	unit := func(name string, v float32) {
		if !finite(v) || v < 0 || v > 1 {
			errs = append(errs, fmt.Errorf("%s must be within [0, 1], got %v", name, v))
		}
	}
	if !finite(p.Temperature) || p.Temperature < 0 {
		errs = append(errs, fmt.Errorf("temperature must be a finite number >= 0, got %v", p.Temperature))
	}
	if p.TopK < 0 {
		errs = append(errs, fmt.Errorf("top_k must be >= 0, got %d", p.TopK))
	}
	unit("top_p", p.TopP)
	unit("min_p", p.MinP)
	if !finite(p.RepeatPenalty) || p.RepeatPenalty < 0 {
		errs = append(errs, fmt.Errorf("repeat_penalty must be a finite number >= 0, got %v", p.RepeatPenalty))
	}
	if p.RepeatLastN < 0 || p.RepeatLastN > MaxRepeatLastN {
		errs = append(errs, fmt.Errorf("repeat_last_n must be within [0, %d], got %d", MaxRepeatLastN, p.RepeatLastN))
	}
	if !finite(p.PresencePenalty) {
		errs = append(errs, fmt.Errorf("presence_penalty must be a finite number, got %v", p.PresencePenalty))
	}
	if !finite(p.FrequencyPenalty) {
		errs = append(errs, fmt.Errorf("frequency_penalty must be a finite number, got %v", p.FrequencyPenalty))
	}
	for id, b := range p.LogitBias {
		if !finite(b) {
			errs = append(errs, fmt.Errorf("logit_bias of token %d must be a finite number, got %v", id, b))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid sampling parameters: %w", errors.Join(errs...))
	}
	return nil
}

func (p Params) penalize() bool {
	return (p.RepeatPenalty != 0 && p.RepeatPenalty != 1) || p.PresencePenalty != 0 || p.FrequencyPenalty != 0
}

func (p Params) lastN() int {
	if p.RepeatLastN == 0 {
		return DefaultRepeatLastN
	}
	return p.RepeatLastN
}

func finite(v float32) bool {
	return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0)
}
