package sample

import (
	"math"
	"testing"
)

func TestLogprobs(t *testing.T) {
	ninf := float32(math.Inf(-1))
	logits := []float32{1, 3, 2, ninf, 3, float32(math.NaN()), -1}
	lp, top := Logprobs(logits, 2, 3, nil)
	var sum float64
	for _, l := range []float64{1, 3, 2, 3, -1} {
		sum += math.Exp(l)
	}
	want := func(l float64) float32 { return float32(l - math.Log(sum)) }
	if math.Abs(float64(lp-want(2))) > 1e-6 {
		t.Errorf("logprob of token 2 = %v, want %v", lp, want(2))
	}
	// Ties go to the lower id; -Inf and NaN are never alternatives.
	wantTop := []Candidate{{1, want(3)}, {4, want(3)}, {2, want(2)}}
	if len(top) != len(wantTop) {
		t.Fatalf("top = %v, want %v", top, wantTop)
	}
	for i := range top {
		if top[i].ID != wantTop[i].ID || math.Abs(float64(top[i].Logprob-wantTop[i].Logprob)) > 1e-6 {
			t.Errorf("top[%d] = %v, want %v", i, top[i], wantTop[i])
		}
	}
	var mass float64
	lps, all := Logprobs(logits, 3, MaxTopLogprobs, top)
	for _, c := range all {
		mass += math.Exp(float64(c.Logprob))
	}
	if len(all) != 5 || math.Abs(mass-1) > 1e-6 {
		t.Errorf("every finite token: %d alternatives with mass %v, want 5 and 1", len(all), mass)
	}
	if lps != MinLogprob {
		t.Errorf("a masked token's logprob = %v, want %v", lps, float32(MinLogprob))
	}
	if _, none := Logprobs(logits, 1, 0, nil); len(none) != 0 {
		t.Errorf("k 0 gave %v", none)
	}
	if lp, none := Logprobs([]float32{ninf, ninf}, 0, 2, nil); lp != MinLogprob || len(none) != 0 {
		t.Errorf("all -Inf: %v %v, want the floor and no alternatives", lp, none)
	}
	if _, big := Logprobs(logits, 1, 100, nil); len(big) != 5 {
		t.Errorf("k past the bound: %d alternatives", len(big))
	}
}

func TestLogprobsAfterPenalties(t *testing.T) {
	s, err := New(Params{Temperature: 0.5, PresencePenalty: 2, HasSeed: true, Seed: 1}, 3)
	if err != nil {
		t.Fatal(err)
	}
	s.Accept(0)
	logits := []float32{2, 1, 0}
	id := s.Sample(logits)
	lp, top := Logprobs(logits, id, 1, nil)
	// Token 0 was penalised to 0: token 1 is the most likely now.
	if top[0].ID != 1 {
		t.Errorf("after the presence penalty the top token is %d, want 1", top[0].ID)
	}
	if lp > 0 || lp < MinLogprob {
		t.Errorf("logprob %v out of range", lp)
	}
}

func TestLogitBias(t *testing.T) {
	s, err := New(Params{LogitBias: map[int32]float32{2: 100, 0: -100}}, 3)
	if err != nil {
		t.Fatal(err)
	}
	logits := []float32{5, 4, -3}
	if id := s.Sample(logits); id != 2 {
		t.Errorf("greedy with token 2 biased by 100: got %d", id)
	}
	if logits[2] != 97 || logits[0] != -95 {
		t.Errorf("biased logits %v, want the bias added in place", logits)
	}
	if _, err := New(Params{LogitBias: map[int32]float32{3: 1}}, 3); err == nil {
		t.Error("a bias for a token outside the vocabulary was accepted")
	}
	if _, err := New(Params{LogitBias: map[int32]float32{1: float32(math.Inf(1))}}, 3); err == nil {
		t.Error("an infinite bias was accepted")
	}
}
