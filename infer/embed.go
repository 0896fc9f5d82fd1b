package infer

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// Embedder turns token sequences into sentence embeddings: the mean over
// the sequence's tokens of the model's final hidden states (after the
// final norm, before the output projection), scaled to unit length, as
// llama.cpp's mean pooling with normalisation gives. It has an engine of
// its own, whose steps evaluate up to StepTokens tokens of a sequence at
// once, so embedding never waits for a generation's batch nor slows it
// beyond sharing the CPU. An Embedder is used by one goroutine at a time.
type Embedder struct {
	e   *Engine
	seq kvSeq
	row []float32
	sum []float64
}

// NewEmbedder makes an embedder for sequences of up to ctxLen tokens (0:
// the length the model was trained for).
func (m *Model) NewEmbedder(ctxLen int) (*Embedder, error) {
	if ctxLen == 0 {
		ctxLen = m.hp.ContextLength
	}
	return m.newEmbedder(EngineConfig{MaxSequences: 1, ContextLength: ctxLen, KVTokens: ctxLen})
}

func (m *Model) newEmbedder(cfg EngineConfig) (*Embedder, error) {
	e, err := m.NewEngine(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedder: %w", err)
	}
	return &Embedder{e: e, row: make([]float32, m.hp.Dim), sum: make([]float64, m.hp.Dim)}, nil
}

// Dim is the length of the embedder's vectors: the model's hidden size.
func (em *Embedder) Dim() int { return em.e.m.hp.Dim }

// ContextLength is the most tokens one sequence may have.
func (em *Embedder) ContextLength() int { return em.e.cfg.ContextLength }

// Embed returns the normalised mean-pooled embedding of tokens. It fails
// with ErrContextExceeded for a sequence longer than the context, and with
// ctx's error when ctx ends between steps.
func (em *Embedder) Embed(ctx context.Context, tokens []int32) ([]float32, error) {
	e := em.e
	switch {
	case len(tokens) == 0:
		return nil, errors.New("embed: no tokens")
	case len(tokens) > e.cfg.ContextLength:
		return nil, fmt.Errorf("%w: %d tokens to embed, the context holds %d", ErrContextExceeded, len(tokens), e.cfg.ContextLength)
	}
	for _, id := range tokens {
		if id < 0 || int(id) >= e.m.hp.VocabSize {
			return nil, fmt.Errorf("embed: token %d is outside the vocabulary of %d", id, e.m.hp.VocabSize)
		}
	}
	// The prefix cache holds keys and values, not the hidden states the
	// mean needs, so every token is evaluated; the blocks are only lent.
	if !e.kv.reserve(&em.seq, len(tokens)) {
		return nil, fmt.Errorf("%w: %d tokens to embed", ErrKVExhausted, len(tokens))
	}
	defer e.kv.releaseSeq(&em.seq, tokens)
	clear(em.sum)
	for start := 0; start < len(tokens); {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n := min(len(tokens)-start, e.cfg.StepTokens)
		em.step(tokens, start, n)
		start += n
	}
	return normalise(em.sum, len(tokens)), nil
}

// step evaluates tokens[start:start+n] and adds their final hidden states
// to the sum.
func (em *Embedder) step(tokens []int32, start, n int) {
	e, m := em.e, em.e.m
	l := &e.layout
	l.tokens, l.positions, l.slots, l.seqOf = l.tokens[:0], l.positions[:0], l.slots[:0], l.seqOf[:0]
	l.blocks, l.logitRows = append(l.blocks[:0], em.seq.blocks), l.logitRows[:0]
	for p := start; p < start+n; p++ {
		l.tokens = append(l.tokens, tokens[p])
		l.positions = append(l.positions, int32(p))
		l.slots = append(l.slots, em.seq.blocks[p/kvBlockTokens]*kvBlockTokens+int32(p%kvBlockTokens))
		l.seqOf = append(l.seqOf, 0)
	}
	x := m.layersForward(e.b, &e.act, l)
	h := e.act.xb.view(n)
	e.b.rmsNorm(h, x, m.outNorm, m.hp.NormEps)
	for i := range n {
		e.b.readRow(em.row, h, i)
		for j, v := range em.row {
			em.sum[j] += float64(v)
		}
	}
	e.kv.advance(&em.seq, tokens, start+n)
}

// normalise divides the sum of n vectors by n and scales the mean to unit
// length; a zero mean stays zero.
func normalise(sum []float64, n int) []float32 {
	var ss float64
	for i := range sum {
		sum[i] /= float64(n)
		ss += sum[i] * sum[i]
	}
	k := 0.0
	if ss > 0 {
		k = 1 / math.Sqrt(ss)
	}
	out := make([]float32, len(sum))
	for i, v := range sum {
		out[i] = float32(v * k)
	}
	return out
}
