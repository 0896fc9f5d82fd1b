package infer

import (
	"context"
	"slices"
	"testing"

	"github.com/rbee-dev/rbee/infer/sample"
)

// TestGenerateN: three choices of one prompt give, each, what the same
// request alone gives; the forked ones take the prompt's full KV blocks
// from the first choice instead of evaluating them again; emit tells the
// choices apart.
func TestGenerateN(t *testing.T) {
	m := loadStories(t)
	prompt := batchPrompts[0]
	reqs := make([]Request, 3)
	for i := range reqs {
		reqs[i] = Request{Prompt: prompt, MaxTokens: 20,
			Sampling: sample.Params{Temperature: 1, Seed: 40 + uint64(i), HasSeed: true}}
	}
	alone := generateAll(t, m, EngineConfig{ContextLength: 256}, reqs[:1])
	for _, r := range reqs[1:] {
		alone = append(alone, generateAll(t, m, EngineConfig{ContextLength: 256}, []Request{r})...)
	}
	e, err := m.NewEngine(EngineConfig{ContextLength: 256, MaxSequences: 4})
	if err != nil {
		t.Fatal(err)
	}
	s, stop := startScheduler(e)
	defer stop()
	emitted := make([][]int32, len(reqs))
	res, err := s.GenerateN(context.Background(), reqs, func(i int, tok Token) error {
		if tok.ID >= 0 {
			emitted[i] = append(emitted[i], tok.ID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	nPrompt := len(res[0].PromptIDs)
	if nPrompt < 2*kvBlockTokens {
		t.Fatalf("the prompt has %d tokens; the test needs two full blocks", nPrompt)
	}
	for i, r := range res {
		if !slices.Equal(r.GeneratedIDs, alone[i]) || !slices.Equal(emitted[i], alone[i]) {
			t.Errorf("choice %d: %v (emitted %v), alone %v", i, r.GeneratedIDs, emitted[i], alone[i])
		}
		// At most the last, partly filled block is evaluated again.
		if i > 0 && r.Timings.PromptTokens > nPrompt%kvBlockTokens+kvBlockTokens {
			t.Errorf("choice %d evaluated %d of the prompt's %d tokens: it did not share the first choice's blocks", i, r.Timings.PromptTokens, nPrompt)
		}
	}
	if slices.Equal(res[0].GeneratedIDs, res[1].GeneratedIDs) && slices.Equal(res[1].GeneratedIDs, res[2].GeneratedIDs) {
		t.Errorf("three seeds gave the same choice %v", res[0].GeneratedIDs)
	}
	t.Logf("prompt %d tokens; choices evaluated %d, %d, %d", nPrompt, res[0].Timings.PromptTokens, res[1].Timings.PromptTokens, res[2].Timings.PromptTokens)
}
