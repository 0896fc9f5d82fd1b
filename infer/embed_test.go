package infer

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/infer/quant"
)

// embedTol bounds max|engine - reference| over a unit vector: the F16 keys
// and values account for a few 1e-4 (see forwardTol).
const embedTol = 2e-3

// referenceEmbedding is the float64 reference's mean of the final hidden
// states, scaled to unit length.
func referenceEmbedding(m *synthModel, tokens []int32, o refOptions) []float64 {
	_, hidden := referenceStates(m, tokens, o)
	mean := make([]float64, len(hidden[0]))
	for _, h := range hidden {
		for i, v := range h {
			mean[i] += v / float64(len(hidden))
		}
	}
	ss := 0.0
	for _, v := range mean {
		ss += v * v
	}
	for i := range mean {
		mean[i] /= math.Sqrt(ss)
	}
	return mean
}

func embed(t *testing.T, em *Embedder, tokens []int32) []float32 {
	t.Helper()
	v, err := em.Embed(t.Context(), tokens)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func maxAbsDiff[A, B float32 | float64](a []A, b []B) float64 {
	worst := 0.0
	for i := range b {
		worst = max(worst, math.Abs(float64(a[i])-float64(b[i])))
	}
	return worst
}

func cosine(a, b []float32) float64 {
	var d float64
	for i := range a {
		d += float64(a[i]) * float64(b[i])
	}
	return d // both have unit length
}

func checkUnit(t *testing.T, v []float32) {
	t.Helper()
	ss := 0.0
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	if math.Abs(math.Sqrt(ss)-1) > 1e-5 {
		t.Errorf("|v| = %v, want 1", math.Sqrt(ss))
	}
}

// TestEmbedMatchesReference compares the engine's pooled embeddings of
// llama and qwen2 models with the float64 reference's, and shows the
// comparison would see the last token's state taken instead of the mean.
func TestEmbedMatchesReference(t *testing.T) {
	for _, c := range []struct {
		name string
		spec synthSpec
		o    refOptions
	}{
		{"llama", synthSpec{arch: ArchLlama, dim: 128, ffn: 192, layers: 2, heads: 4, kvHs: 2, seed: 5},
			refOptions{base: 10000, posScale: 1}},
		{"qwen2", synthSpec{arch: ArchQwen2, dim: 128, ffn: 192, layers: 2, heads: 4, kvHs: 2,
			ropeBase: 1e6, tied: true, biases: true, seed: 6}, refOptions{neox: true, base: 1e6, posScale: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			sm := newSynthModel(c.spec)
			m := sm.load(t, quant.F32)
			em, err := m.NewEmbedder(0)
			if err != nil {
				t.Fatal(err)
			}
			if em.Dim() != c.spec.dim {
				t.Errorf("Dim = %d, want %d", em.Dim(), c.spec.dim)
			}
			tokens := synthTokens(12)
			got := embed(t, em, tokens)
			checkUnit(t, got)
			want := referenceEmbedding(sm, tokens, c.o)
			d := maxAbsDiff(got, want)
			if d > embedTol {
				t.Errorf("embedding differs from the reference by %.3g, want <= %g", d, embedTol)
			}
			t.Logf("engine against the reference: %.2g", d)
			_, hidden := referenceStates(sm, tokens, c.o)
			last := hidden[len(hidden)-1]
			ss := 0.0
			for _, v := range last {
				ss += v * v
			}
			for i := range last {
				last[i] /= math.Sqrt(ss)
			}
			if d := maxAbsDiff(got, last); d < 10*embedTol {
				t.Errorf("the last token's state is within %.3g of the mean's: the check cannot tell pooling apart", d)
			}
		})
	}
}

// TestEmbedChunksAndRepeats: evaluating the sequence in steps of three
// tokens gives the same vector, bit for bit, as in one step (each row's
// sums run in a fixed order), and a second call gives it again.
func TestEmbedChunksAndRepeats(t *testing.T) {
	sm := newSynthModel(synthSpec{arch: ArchLlama, dim: 64, ffn: 96, layers: 2, heads: 4, kvHs: 2, seed: 8})
	m := sm.load(t, quant.Q8_0)
	whole, err := m.NewEmbedder(64)
	if err != nil {
		t.Fatal(err)
	}
	chunked, err := m.newEmbedder(EngineConfig{MaxSequences: 1, ContextLength: 64, KVTokens: 64, StepTokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	tokens := synthTokens(40)
	a := embed(t, whole, tokens)
	if b := embed(t, chunked, tokens); !slices.Equal(a, b) {
		t.Errorf("chunked embedding differs by %.3g", maxAbsDiff(a, b))
	}
	if b := embed(t, whole, tokens); !slices.Equal(a, b) {
		t.Errorf("a second call differs by %.3g", maxAbsDiff(a, b))
	}
	other := embed(t, whole, synthTokens(20))
	if c := cosine(a, other); c > 0.9999 {
		t.Errorf("different inputs: cosine %v, want distinct vectors", c)
	}
	// Each call gives its blocks back: the pool, one context, never runs out.
	for range 10 {
		embed(t, whole, tokens)
	}
}

// TestEmbedBatchEqualsAlone: sequences packed several to a step, some
// spanning steps, more of them than the batch holds, get the vectors each
// gets alone, bit for bit.
func TestEmbedBatchEqualsAlone(t *testing.T) {
	sm := newSynthModel(synthSpec{arch: ArchQwen2, dim: 64, ffn: 96, layers: 2, heads: 4, kvHs: 2, biases: true, seed: 10})
	m := sm.load(t, quant.Q8_0)
	batch, err := m.newEmbedder(EngineConfig{MaxSequences: 3, ContextLength: 48, KVTokens: 3 * 48, StepTokens: 16})
	if err != nil {
		t.Fatal(err)
	}
	alone, err := m.NewEmbedder(48)
	if err != nil {
		t.Fatal(err)
	}
	var seqs [][]int32
	for _, n := range []int{5, 40, 1, 17, 16, 33, 2} {
		seqs = append(seqs, synthTokens(n))
	}
	got, err := batch.EmbedBatch(t.Context(), seqs)
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range seqs {
		if want := embed(t, alone, s); !slices.Equal(got[i], want) {
			t.Errorf("sequence %d (%d tokens): batched differs from alone by %.3g", i, len(s), maxAbsDiff(got[i], want))
		}
	}
	if inUse, _, _ := batch.e.KVStats(); inUse != 0 {
		t.Errorf("%d KV blocks still in use after the batch", inUse)
	}
	// A pool of one context: sequences join as the room they need frees.
	tight, err := alone.EmbedBatch(t.Context(), seqs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(tight, got, slices.Equal) {
		t.Error("batched in a pool of one context: vectors differ")
	}
	if _, err := batch.EmbedBatch(t.Context(), [][]int32{synthTokens(3), synthTokens(49)}); !errors.Is(err, ErrContextExceeded) || !strings.Contains(err.Error(), "sequence 1") {
		t.Errorf("a sequence past the context: %v, want ErrContextExceeded naming sequence 1", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := batch.EmbedBatch(ctx, seqs); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if inUse, _, _ := batch.e.KVStats(); inUse != 0 {
		t.Errorf("%d KV blocks still in use after a cancelled batch", inUse)
	}
}

// TestEmbedStories embeds text with the bundled model: unit vectors, the
// same for the same text, closer for related texts than for unrelated ones.
func TestEmbedStories(t *testing.T) {
	m := loadStories(t)
	em, err := m.NewEmbedder(0)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(s string) []int32 {
		ids, err := m.Tokenizer().Encode(s, true, false)
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}
	a := embed(t, em, enc("Once upon a time there was a little cat."))
	checkUnit(t, a)
	if b := embed(t, em, enc("Once upon a time there was a little cat.")); !slices.Equal(a, b) {
		t.Error("the same text gave different vectors")
	}
	if c := cosine(a, embed(t, em, enc("The sun is hot."))); c > 0.9999 {
		t.Errorf("different texts: cosine %v", c)
	}
}

func TestEmbedRefuses(t *testing.T) {
	sm := newSynthModel(synthSpec{arch: ArchLlama, dim: 64, ffn: 96, layers: 1, heads: 4, kvHs: 2, seed: 9})
	m := sm.load(t, quant.F32)
	em, err := m.NewEmbedder(8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := em.Embed(t.Context(), synthTokens(9)); !errors.Is(err, ErrContextExceeded) {
		t.Errorf("9 tokens in a context of 8: %v, want ErrContextExceeded", err)
	}
	if _, err := em.Embed(t.Context(), nil); err == nil {
		t.Error("no tokens: no error")
	}
	if _, err := em.Embed(t.Context(), []int32{1, int32(m.Hyperparameters().VocabSize)}); err == nil {
		t.Error("a token outside the vocabulary: no error")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := em.Embed(ctx, synthTokens(4)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if v := embed(t, em, synthTokens(8)); len(v) != 64 {
		t.Errorf("after refusals: %d values, want 64", len(v))
	}
}
