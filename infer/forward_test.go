package infer

import (
	"testing"

	"github.com/rbee-dev/rbee/infer/quant"
)

// forwardTol bounds max|engine - reference| / max|reference| per step. The
// engine keeps keys and values in F16 and rounds queries and attention
// weights to F16 before they meet the cache, as ggml does; the float64
// reference does none of that. Each rounding is a relative 2^-11 (5e-4);
// over seeds 1-6 the logits differed by 2-9e-4, while every wrong RoPE
// convention below misses by more than 0.1.
const forwardTol = 3e-3

// checkAgainstReference runs tokens through the engine and the float64
// reference with the right RoPE conventions, then with each wrong one, which
// must miss by several times the tolerance: the comparison sees RoPE.
func checkAgainstReference(t *testing.T, m *synthModel, right refOptions, wrong map[string]refOptions) {
	t.Helper()
	tokens := synthTokens(10)
	got := engineLogits(t, m.load(t, quant.F32), tokens)
	want := referenceLogits(m, tokens, right)
	for i := range want {
		d := relDiff(got[i], want[i])
		if d > forwardTol {
			t.Errorf("position %d: logits differ from the reference by %.3g of their range, want <= %g", i, d, forwardTol)
		}
	}
	t.Logf("engine against the reference: %.2g", worstRelDiff(got, want))
	for name, o := range wrong {
		d := worstRelDiff(got, referenceLogits(m, tokens, o))
		t.Logf("engine against the reference with %s: %.2g", name, d)
		if d < 3*forwardTol {
			t.Errorf("the engine is within %.3g of a reference with %s: the check cannot tell RoPE conventions apart", d, name)
		}
	}
}

// TestQwen2MatchesReference covers qwen2's differences from llama: biases
// on q, k and v, NeoX RoPE (pairs half a head apart), and tied embeddings.
func TestQwen2MatchesReference(t *testing.T) {
	spec := synthSpec{arch: ArchQwen2, dim: 128, ffn: 192, layers: 2, heads: 4, kvHs: 2,
		ropeBase: 1e6, tied: true, biases: true, seed: 3}
	m := newSynthModel(spec)
	checkAgainstReference(t, m, refOptions{neox: true, base: 1e6, posScale: 1}, map[string]refOptions{
		"adjacent-pair RoPE": {neox: false, base: 1e6, posScale: 1},
		"RoPE base 10000":    {neox: true, base: 1e4, posScale: 1},
	})
}

// TestLlamaRopeMatchesReference covers llama's adjacent-pair RoPE with a
// base other than the default and linear position scaling.
func TestLlamaRopeMatchesReference(t *testing.T) {
	spec := synthSpec{arch: ArchLlama, dim: 128, ffn: 192, layers: 2, heads: 4, kvHs: 2,
		ropeBase: 1000, ropeLinear: 2, seed: 4}
	m := newSynthModel(spec)
	checkAgainstReference(t, m, refOptions{neox: false, base: 1000, posScale: 0.5}, map[string]refOptions{
		"NeoX RoPE":               {neox: true, base: 1000, posScale: 0.5},
		"RoPE base 10000":         {neox: false, base: 1e4, posScale: 0.5},
		"no linear scaling":       {neox: false, base: 1000, posScale: 1},
		"scaling applied inverse": {neox: false, base: 1000, posScale: 2},
	})
}
