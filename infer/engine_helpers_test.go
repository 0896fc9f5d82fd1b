package infer

import (
	"testing"
)

// forwardLogits evaluates tokens as one sequence on a fresh engine, chunk
// tokens per step, and returns the logits after every token.
func forwardLogits(t testing.TB, m *Model, tokens []int32, chunk int) [][]float32 {
	t.Helper()
	e, err := m.NewEngine(EngineConfig{ContextLength: len(tokens) + 1, StepTokens: chunk})
	if err != nil {
		t.Fatal(err)
	}
	var s kvSeq
	if !e.kv.reserve(&s, len(tokens)) {
		t.Fatal("no KV room")
	}
	out := make([][]float32, 0, len(tokens))
	l := &e.layout
	for lo := 0; lo < len(tokens); lo += chunk {
		hi := min(lo+chunk, len(tokens))
		l.tokens, l.positions, l.slots, l.seqOf = l.tokens[:0], l.positions[:0], l.slots[:0], l.seqOf[:0]
		l.blocks, l.logitRows = append(l.blocks[:0], s.blocks), l.logitRows[:0]
		for p := lo; p < hi; p++ {
			if id := tokens[p]; id < 0 || int(id) >= m.hp.VocabSize {
				t.Fatalf("token %d (%d) is outside the vocabulary", p, id)
			}
			l.tokens = append(l.tokens, tokens[p])
			l.positions = append(l.positions, int32(p))
			l.slots = append(l.slots, s.blocks[p/kvBlockTokens]*kvBlockTokens+int32(p%kvBlockTokens))
			l.seqOf = append(l.seqOf, 0)
			l.logitRows = append(l.logitRows, int32(p-lo))
		}
		if len(l.logitRows) > e.cfg.MaxSequences {
			// forward writes one logits row per entry: make room for the chunk.
			e.act.last = e.b.newTensor(len(l.logitRows), m.hp.Dim)
			e.act.logits = e.b.newTensor(len(l.logitRows), m.hp.VocabSize)
		}
		m.forward(e.b, &e.act, l)
		for i := range l.logitRows {
			out = append(out, append([]float32(nil), e.act.logits.row(i)...))
		}
		e.kv.advance(&s, tokens, hi)
	}
	return out
}
