package infer

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/rbee-dev/rbee/infer/quant"
)

// quantSpec is small but real: every matrix row length (256 for the inputs
// of q, k, v, gate, up, output and the embedding; 256 and 512 for
// attn_output and ffn_down) is a whole number of K-quant super-blocks, and
// 8 query heads share 2 KV heads.
var quantSpec = synthSpec{arch: ArchLlama, dim: 256, ffn: 512, layers: 2, heads: 8, kvHs: 2, ropeBase: 10000, seed: 1}

// TestQuantisedMatchesDequantisedF32 runs, for each weight type, model A
// (matrices stored as that type) and model B (the same quantised matrices
// dequantised and stored as F32) on the same tokens. Both compute with the
// very same weight values, so what is left between their logits is the
// arithmetic of the type's kernel.
func TestQuantisedMatchesDequantisedF32(t *testing.T) {
	base := newSynthModel(quantSpec)
	tokens := synthTokens(10)
	orig := engineLogits(t, base.load(t, quant.F32), tokens)
	for _, c := range []struct {
		typ quant.Type
		// Bounds on max|A-B| / max|B| and on rms(A-B) / rms(B) over all
		// steps' logits. F16 and BF16 weights dot against activations
		// rounded to F16 and BF16, as ggml does (measured 9.5e-4 and 4.4e-3
		// max; the bounds leave about 2x). The 8-bit types dot
		// against activations quantised to 8 bits as ggml does (Q8_0 blocks
		// of 32 for Q8_0 and Q4_0, Q8_K blocks of 256 for the K-quants):
		// an error the size of Q8_0 weight quantisation in every product.
		// Over seeds 1-4 it measured 1.5-2.9e-2 (max) and 1.2-2.1e-2 (rms);
		// the bounds leave about 1.5x.
		maxTol, rmsTol float64
		// lowBit: the type's own weight error moves the logits at least
		// twice as far from the unquantised model as the kernel error does
		// (rms measured 2.5x for Q6_K, 10x and more for the 4-bit types), so
		// the bounds are tight enough that a dequantisation mistake of even
		// that size would fail them.
		lowBit bool
		greedy bool // compare greedy generation too
	}{
		{quant.F16, 2e-3, 1.5e-3, false, true},
		{quant.BF16, 1e-2, 8e-3, false, false},
		{quant.Q8_0, 5e-2, 3e-2, false, true},
		{quant.Q4_0, 5e-2, 3e-2, true, false},
		{quant.Q4_K, 5e-2, 3e-2, true, false},
		{quant.Q6_K, 5e-2, 3e-2, true, false},
	} {
		t.Run(c.typ.String(), func(t *testing.T) {
			deq := base.roundTrip(t, c.typ)
			modelA, modelB := base.load(t, c.typ), deq.load(t, quant.F32)
			if got := modelA.tokEmb.Type; got != c.typ {
				t.Fatalf("model A's embedding is %s, want %s", got, c.typ)
			}
			a, b := engineLogits(t, modelA, tokens), engineLogits(t, modelB, tokens)
			maxDiff, rmsDiff := worstRelDiff(a, b), rmsRelDiff(a, b)
			t.Logf("A against B: max %.2g rms %.2g; A against the unquantised model: rms %.2g",
				maxDiff, rmsDiff, rmsRelDiff(a, orig))
			if maxDiff > c.maxTol || rmsDiff > c.rmsTol {
				t.Errorf("logits of the %s model differ from its dequantised F32 twin by %.3g (max) and %.3g (rms) "+
					"of their scale, want <= %.2g and %.2g", c.typ, maxDiff, rmsDiff, c.maxTol, c.rmsTol)
			} else if weights := rmsRelDiff(a, orig); c.lowBit && weights < 2*rmsDiff {
				t.Errorf("quantising to %s moved the logits by %.3g (rms), not clearly more than the kernel "+
					"difference %.3g: the comparison would not catch a wrong dequantisation", c.typ, weights, rmsDiff)
			}
			if c.greedy {
				compareGreedy(t, modelA, modelB)
			}
		})
	}
}

// compareGreedy checks that greedy generation on A and B picks the same
// tokens, except where B's choice was a near-tie that the logit difference
// between A and B could flip.
func compareGreedy(t *testing.T, modelA, modelB *Model) {
	t.Helper()
	gen := func(m *Model) Result {
		s, err := m.NewSession(64)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Generate(context.Background(), Request{Prompt: "once upon a time", MaxTokens: 8}, func(Token) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	ra, rb := gen(modelA), gen(modelB)
	if len(rb.GeneratedIDs) < 4 || !slices.Equal(ra.PromptIDs, rb.PromptIDs) {
		t.Fatalf("prompts %v and %v; B generated only %v", ra.PromptIDs, rb.PromptIDs, rb.GeneratedIDs)
	}
	i := 0
	for i < len(ra.GeneratedIDs) && i < len(rb.GeneratedIDs) && ra.GeneratedIDs[i] == rb.GeneratedIDs[i] {
		i++
	}
	t.Logf("greedy: %d of %d tokens agree", i, len(rb.GeneratedIDs))
	if i == len(rb.GeneratedIDs) && i == len(ra.GeneratedIDs) {
		return
	}
	if i == len(rb.GeneratedIDs) || i == len(ra.GeneratedIDs) {
		t.Fatalf("one generation stopped early:\nA %v\nB %v", ra.GeneratedIDs, rb.GeneratedIDs)
	}
	// Both saw the same tokens up to step i: replay them and compare B's
	// margin there with how far A's logits are from B's.
	path := append(slices.Clone(rb.PromptIDs), rb.GeneratedIDs[:i]...)
	la, lb := engineLogits(t, modelA, path), engineLogits(t, modelB, path)
	rowA, rowB := la[len(path)-1], lb[len(path)-1]
	chosen, other := rb.GeneratedIDs[i], ra.GeneratedIDs[i]
	var diff float64
	for j := range rowB {
		diff = max(diff, math.Abs(float64(rowA[j]-rowB[j])))
	}
	if slices.Max(rowA) != rowA[other] || slices.Max(rowB) != rowB[chosen] {
		t.Errorf("greedy step %d: A picked %d (logit %v, max %v), B picked %d (logit %v, max %v): not the argmax",
			i, other, rowA[other], slices.Max(rowA), chosen, rowB[chosen], slices.Max(rowB))
	}
	if margin := float64(rowB[chosen] - rowB[other]); margin > 2*diff {
		t.Errorf("greedy step %d: A picked %d, B picked %d with a margin of %.3g, more than twice the largest logit difference %.3g",
			i, other, chosen, margin, diff)
	}
}
