package sample

import (
	"math"
	"slices"
	"testing"
)

func TestKeyOrderAndRoundTrip(t *testing.T) {
	// Descending logits; equal logits in ascending id order.
	in := []struct {
		id    int32
		logit float32
	}{
		{3, math.MaxFloat32},
		{0, 100},
		{1, 1},
		{9, math.SmallestNonzeroFloat32},
		{0, 0},
		{5, 0},
		{2, -math.SmallestNonzeroFloat32},
		{1, -1},
		{4, -1},
		{math.MaxInt32, -1},
		{0, -math.MaxFloat32},
	}
	var prev uint64
	for i, x := range in {
		k := key(x.id, x.logit)
		if keyID(k) != x.id || keyLogit(k) != x.logit {
			t.Errorf("key(%d, %v) decodes to (%d, %v)", x.id, x.logit, keyID(k), keyLogit(k))
		}
		if i > 0 && k <= prev {
			t.Errorf("key(%d, %v) does not sort after the previous entry", x.id, x.logit)
		}
		prev = k
	}
}

// TestSelectionOnStructuredInputs runs the selections on inputs that break
// naive quickselects: sorted, reversed, organ pipe and all equal.
func TestSelectionOnStructuredInputs(t *testing.T) {
	const n = 5000
	inputs := map[string]func(i int) float32{
		"ascending":  func(i int) float32 { return float32(i) / 500 },
		"descending": func(i int) float32 { return float32(n-i) / 500 },
		"organ pipe": func(i int) float32 { return float32(min(i, n-i)) / 500 },
		"all equal":  func(int) float32 { return 1 },
		"two values": func(i int) float32 { return float32(i % 2) },
	}
	params := []Params{
		{Temperature: 1, TopK: 1},
		{Temperature: 1, TopK: 17},
		{Temperature: 1, TopK: n - 1},
		// p*n is not a whole number, so with equal logits the cut does not
		// sit exactly on a rounding boundary.
		{Temperature: 1, TopP: 0.5001},
		{Temperature: 1, TopP: 0.9901},
	}
	for name, f := range inputs {
		logits := make([]float32, n)
		for i := range logits {
			logits[i] = f(i)
		}
		for _, p := range params {
			s := newSampler(t, p, n)
			if got, want := kept(s, logits), reference(logits, p); !slices.Equal(got, want) {
				t.Errorf("%s %+v: kept %d tokens, reference %d", name, p, len(got), len(want))
			}
		}
	}
}
