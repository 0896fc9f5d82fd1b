package infer

import (
	"context"
	"math"
	"testing"

	"github.com/rbee-dev/rbee/infer/grammar"
	"github.com/rbee-dev/rbee/infer/sample"
)

// TestLogprobs checks each token's reported logprob against the
// log-softmax of the logits it was sampled from, and that a greedy token is
// its step's most likely alternative.
func TestLogprobs(t *testing.T) {
	m := loadStories(t)
	e, err := m.NewEngine(EngineConfig{ContextLength: 256})
	if err != nil {
		t.Fatal(err)
	}
	s, stop := startScheduler(e)
	defer stop()
	const steps = 12
	var got []Token
	req := Request{Prompt: "Once upon a time", MaxTokens: steps, LogitSteps: steps, Logprobs: true, TopLogprobs: 5}
	res, err := s.Generate(context.Background(), req, func(tok Token) error {
		if tok.ID >= 0 {
			got = append(got, tok)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != steps || len(res.Logits) != steps {
		t.Fatalf("%d tokens and %d logit rows, want %d", len(got), len(res.Logits), steps)
	}
	for i, tok := range got {
		lp := tok.Logprobs
		if lp == nil || len(lp.Top) != 5 {
			t.Fatalf("token %d: logprobs %+v, want 5 alternatives", i, lp)
		}
		logits := res.Logits[i]
		var sum float64
		maxL := math.Inf(-1)
		for _, l := range logits {
			maxL = math.Max(maxL, float64(l))
		}
		for _, l := range logits {
			sum += math.Exp(float64(l) - maxL)
		}
		want := float64(logits[tok.ID]) - maxL - math.Log(sum)
		if math.Abs(float64(lp.Logprob)-want) > 1e-4 {
			t.Errorf("token %d: logprob %v, want %v", i, lp.Logprob, want)
		}
		if lp.Top[0].ID != tok.ID || lp.Top[0].Logprob != lp.Logprob {
			t.Errorf("token %d (%d) is greedy but the top alternative is %+v", i, tok.ID, lp.Top[0])
		}
		if string(lp.Bytes) != string(m.tok.Piece(tok.ID)) {
			t.Errorf("token %d: bytes %q, want %q", i, lp.Bytes, m.tok.Piece(tok.ID))
		}
		for j := 1; j < len(lp.Top); j++ {
			if lp.Top[j].Logprob > lp.Top[j-1].Logprob {
				t.Errorf("token %d: alternatives out of order: %+v", i, lp.Top)
			}
		}
	}
}

// TestLogprobsConstrained: under a grammar, the alternatives are tokens the
// grammar allowed, so their mass is all the probability there is.
func TestLogprobsConstrained(t *testing.T) {
	m := loadStories(t)
	e, err := m.NewEngine(EngineConfig{ContextLength: 256})
	if err != nil {
		t.Fatal(err)
	}
	s, stop := startScheduler(e)
	defer stop()
	req := Request{Prompt: "Once upon a time", MaxTokens: 8, Grammar: grammar.JSONObject(), Logprobs: true,
		TopLogprobs: sample.MaxTopLogprobs, Sampling: sample.Params{Temperature: 1, Seed: 3, HasSeed: true}}
	first := true
	if _, err := s.Generate(context.Background(), req, func(tok Token) error {
		if tok.ID < 0 || !first {
			return nil
		}
		first = false
		// The first token must open the object: "{" or " " at most.
		var mass float64
		for _, a := range tok.Logprobs.Top {
			if b := string(a.Bytes); b == "" || (b[0] != '{' && b[0] != ' ') {
				t.Errorf("alternative %q is not allowed first", a.Bytes)
			}
			mass += math.Exp(float64(a.Logprob))
		}
		if mass > 1+1e-4 {
			t.Errorf("alternatives' mass %v", mass)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if first {
		t.Fatal("no token")
	}
}
