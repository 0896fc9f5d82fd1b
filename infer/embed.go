package infer

import (
	"context"
	"fmt"
	"math"
)

// EmbedSequences is how many sequences an embedder evaluates in one step.
const EmbedSequences = 8

// Embedder turns token sequences into sentence embeddings: the mean over
// a sequence's tokens of the model's final hidden states (after the final
// norm, before the output projection), scaled to unit length, as
// llama.cpp's mean pooling with normalisation gives. It has an engine of
// its own, so embedding never waits for a generation's batch: each step
// evaluates up to StepTokens tokens of up to EmbedSequences sequences
// together, every weight read once for all of them. A row's result does
// not depend on the others in its step, so a sequence's vector is the same
// whatever it is batched with. An Embedder is used by one goroutine at a
// time.
type Embedder struct {
	e    *Engine
	live []*embedSeq // sequences of the batch, in input order
	row  []float32
}

// embedSeq is one sequence being embedded.
type embedSeq struct {
	tokens []int32
	kv     kvSeq
	sum    []float64
	out    *[]float32
}

// NewEmbedder makes an embedder for sequences of up to ctxLen tokens (0:
// the length the model was trained for). Its KV pool holds one context:
// short sequences share it, up to EmbedSequences at once, and a long one
// waits for the room it needs.
func (m *Model) NewEmbedder(ctxLen int) (*Embedder, error) {
	if ctxLen == 0 {
		ctxLen = m.hp.ContextLength
	}
	return m.newEmbedder(EngineConfig{MaxSequences: EmbedSequences, ContextLength: ctxLen, KVTokens: ctxLen})
}

func (m *Model) newEmbedder(cfg EngineConfig) (*Embedder, error) {
	e, err := m.NewEngine(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedder: %w", err)
	}
	return &Embedder{e: e, row: make([]float32, m.hp.Dim)}, nil
}

// Dim is the length of the embedder's vectors: the model's hidden size.
func (em *Embedder) Dim() int { return em.e.m.hp.Dim }

// ContextLength is the most tokens one sequence may have.
func (em *Embedder) ContextLength() int { return em.e.cfg.ContextLength }

// Embed returns the normalised mean-pooled embedding of tokens.
func (em *Embedder) Embed(ctx context.Context, tokens []int32) ([]float32, error) {
	out, err := em.EmbedBatch(ctx, [][]int32{tokens})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// EmbedBatch returns the embedding of each sequence, in order. It fails
// with ErrContextExceeded naming the first sequence longer than the
// context, before evaluating any, and with ctx's error when ctx ends
// between steps.
func (em *Embedder) EmbedBatch(ctx context.Context, seqs [][]int32) ([][]float32, error) {
	e := em.e
	for i, tokens := range seqs {
		switch {
		case len(tokens) == 0:
			return nil, fmt.Errorf("embed: sequence %d has no tokens", i)
		case len(tokens) > e.cfg.ContextLength:
			return nil, fmt.Errorf("%w: sequence %d has %d tokens, the context holds %d", ErrContextExceeded, i, len(tokens), e.cfg.ContextLength)
		}
		for _, id := range tokens {
			if id < 0 || int(id) >= e.m.hp.VocabSize {
				return nil, fmt.Errorf("embed: token %d is outside the vocabulary of %d", id, e.m.hp.VocabSize)
			}
		}
	}
	out := make([][]float32, len(seqs))
	defer em.releaseAll()
	next := 0
	for next < len(seqs) || len(em.live) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// Sequences join while there is room; each holds blocks for all its
		// tokens, since the prefix cache keeps keys and values, not the
		// hidden states the mean needs, and every token is evaluated.
		for next < len(seqs) && len(em.live) < e.cfg.MaxSequences {
			s := &embedSeq{tokens: seqs[next], sum: make([]float64, e.m.hp.Dim), out: &out[next]}
			if !e.kv.reserve(&s.kv, len(s.tokens)) {
				if len(em.live) == 0 {
					return nil, fmt.Errorf("%w: %d tokens to embed", ErrKVExhausted, len(s.tokens))
				}
				break
			}
			em.live = append(em.live, s)
			next++
		}
		em.step()
	}
	return out, nil
}

// step evaluates the next chunk of each live sequence, in order, within
// the step's token budget, adds their final hidden states to the sums and
// retires the sequences it completes.
func (em *Embedder) step() {
	e, m := em.e, em.e.m
	l := &e.layout
	l.tokens, l.positions, l.slots, l.seqOf = l.tokens[:0], l.positions[:0], l.slots[:0], l.seqOf[:0]
	l.blocks, l.logitRows = l.blocks[:0], l.logitRows[:0]
	e.chunk = e.chunk[:0]
	budget := e.cfg.StepTokens
	for _, s := range em.live {
		n := min(len(s.tokens)-s.kv.len, budget)
		seq := int32(len(l.blocks))
		l.blocks = append(l.blocks, s.kv.blocks)
		for p := s.kv.len; p < s.kv.len+n; p++ {
			l.tokens = append(l.tokens, s.tokens[p])
			l.positions = append(l.positions, int32(p))
			l.slots = append(l.slots, s.kv.blocks[p/kvBlockTokens]*kvBlockTokens+int32(p%kvBlockTokens))
			l.seqOf = append(l.seqOf, seq)
		}
		e.chunk = append(e.chunk, n)
		if budget -= n; budget == 0 {
			break
		}
	}
	x := m.layersForward(e.b, &e.act, l)
	h := e.act.xb.view(len(l.tokens))
	e.b.rmsNorm(h, x, m.outNorm, m.hp.NormEps)
	row := 0
	for i, n := range e.chunk {
		s := em.live[i]
		for range n {
			e.b.readRow(em.row, h, row)
			for j, v := range em.row {
				s.sum[j] += float64(v)
			}
			row++
		}
		e.kv.advance(&s.kv, s.tokens, s.kv.len+n)
	}
	kept := em.live[:0]
	for _, s := range em.live {
		if s.kv.len < len(s.tokens) {
			kept = append(kept, s)
			continue
		}
		*s.out = normalise(s.sum, len(s.tokens))
		e.kv.releaseSeq(&s.kv, s.tokens)
	}
	clear(em.live[len(kept):])
	em.live = kept
}

// releaseAll gives back the blocks of sequences a failed batch left.
func (em *Embedder) releaseAll() {
	for _, s := range em.live {
		em.e.kv.releaseSeq(&s.kv, s.tokens)
	}
	clear(em.live)
	em.live = em.live[:0]
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
