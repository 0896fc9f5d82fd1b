package sample

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func newSampler(t *testing.T, p Params, vocab int) *Sampler {
	t.Helper()
	s, err := New(p, vocab)
	if err != nil {
		t.Fatalf("New(%+v, %d): %v", p, vocab, err)
	}
	return s
}

// logitsOf returns ln(p) for each probability, so the softmax at
// temperature 1 gives back p.
func logitsOf(probs ...float64) []float32 {
	out := make([]float32, len(probs))
	for i, p := range probs {
		out[i] = float32(math.Log(p))
	}
	return out
}

// kept returns the ids that survive the filters, in ascending order.
func kept(s *Sampler, logits []float32) []int32 {
	c, _, _ := s.filter(slices.Clone(logits))
	ids := make([]int32, len(c))
	for i, k := range c {
		ids[i] = keyID(k)
	}
	slices.Sort(ids)
	return ids
}

func TestGreedyTiesGoToLowestID(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	cases := []struct {
		name   string
		logits []float32
		want   int32
	}{
		{"tie", []float32{1, 3, 3, 2}, 1},
		{"tie at end", []float32{0, -1, 5, 5}, 2},
		{"single", []float32{-7}, 0},
		{"negative", []float32{-3, -1, -2}, 1},
		{"nan skipped", []float32{nan, 2, nan, 2}, 1},
		{"all nan", []float32{nan, nan}, 0},
		{"inf", []float32{1, inf, inf}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Filters keep the argmax, so they must not change a greedy choice.
			s := newSampler(t, Params{TopK: 1, TopP: 0.5, MinP: 0.5}, len(tc.logits))
			if got := s.Sample(slices.Clone(tc.logits)); got != tc.want {
				t.Fatalf("Sample(%v) = %d, want %d", tc.logits, got, tc.want)
			}
		})
	}
}

func TestTopK(t *testing.T) {
	s := newSampler(t, Params{Temperature: 1, TopK: 2}, 5)
	if got, want := kept(s, []float32{0.1, 3, -2, 5, 2.9}), []int32{1, 3}; !slices.Equal(got, want) {
		t.Fatalf("top-2 kept %v, want %v", got, want)
	}
	s = newSampler(t, Params{Temperature: 1, TopK: 1}, 4)
	if got, want := kept(s, []float32{1, 2, 2, 0}), []int32{1}; !slices.Equal(got, want) {
		t.Fatalf("top-1 with a tie kept %v, want %v", got, want)
	}
	s = newSampler(t, Params{Temperature: 1, TopK: 10}, 3)
	if got, want := kept(s, []float32{1, 2, 3}), []int32{0, 1, 2}; !slices.Equal(got, want) {
		t.Fatalf("top-k larger than vocab kept %v, want %v", got, want)
	}
}

func TestTopP(t *testing.T) {
	// Probabilities 0.5, 0.3, 0.15, 0.05 placed out of order.
	logits := logitsOf(0.3, 0.05, 0.5, 0.15)
	cases := []struct {
		p    float32
		want []int32
	}{
		{0.4, []int32{2}},
		{0.75, []int32{0, 2}},
		{0.85, []int32{0, 2, 3}},
		{0.99, []int32{0, 1, 2, 3}},
		{1, []int32{0, 1, 2, 3}},
	}
	for _, tc := range cases {
		s := newSampler(t, Params{Temperature: 1, TopP: tc.p}, len(logits))
		if got := kept(s, logits); !slices.Equal(got, tc.want) {
			t.Errorf("top_p=%v kept %v, want %v", tc.p, got, tc.want)
		}
	}
}

func TestMinP(t *testing.T) {
	logits := logitsOf(0.5, 0.3, 0.15, 0.05)
	cases := []struct {
		p    Params
		want []int32
	}{
		{Params{MinP: 0.05}, []int32{0, 1, 2, 3}},
		{Params{MinP: 0.2}, []int32{0, 1, 2}},  // threshold 0.1
		{Params{MinP: 0.25}, []int32{0, 1, 2}}, // threshold 0.125
		{Params{MinP: 0.5}, []int32{0, 1}},     // threshold 0.25
		{Params{MinP: 1}, []int32{0}},          // only the best
		// After top-k or top-p have sorted a prefix, min-p cuts inside it.
		{Params{MinP: 0.5, TopK: 3}, []int32{0, 1}},
		{Params{MinP: 0.2, TopK: 2}, []int32{0, 1}},
		{Params{MinP: 0.9, TopP: 0.999}, []int32{0}},
	}
	for _, tc := range cases {
		tc.p.Temperature = 1
		s := newSampler(t, tc.p, len(logits))
		if got := kept(s, logits); !slices.Equal(got, tc.want) {
			t.Errorf("%+v kept %v, want %v", tc.p, got, tc.want)
		}
	}
}

// TestFilterOrder pins llama.cpp's order: top-k renormalises before top-p,
// and top-p and min-p see the logits before the temperature.
func TestFilterOrder(t *testing.T) {
	logits := logitsOf(0.4, 0.3, 0.2, 0.1)
	cases := []struct {
		name string
		p    Params
		want []int32
	}{
		{"top-p alone", Params{Temperature: 1, TopP: 0.5}, []int32{0, 1}},
		// Within the top 2 the first token has 0.4/0.7 = 0.57 >= 0.5.
		{"top-k then top-p", Params{Temperature: 1, TopK: 2, TopP: 0.5}, []int32{0}},
		// At temperature 10 the distribution is nearly flat, but top-p
		// uses temperature 1.
		{"top-p before temperature", Params{Temperature: 10, TopP: 0.65}, []int32{0, 1}},
		// At temperature 0.1 token 2 would fall far below 0.3 * max.
		{"min-p before temperature", Params{Temperature: 0.1, MinP: 0.3}, []int32{0, 1, 2}},
		{"top-p then min-p", Params{Temperature: 1, TopP: 0.95, MinP: 0.6}, []int32{0, 1}},
	}
	for _, tc := range cases {
		s := newSampler(t, tc.p, len(logits))
		if got := kept(s, logits); !slices.Equal(got, tc.want) {
			t.Errorf("%s: kept %v, want %v", tc.name, got, tc.want)
		}
	}
}

// reference applies the filters the slow, obvious way: full sort, then
// top-k, top-p, min-p.
func reference(logits []float32, p Params) []int32 {
	type cand struct {
		id    int32
		logit float32
	}
	c := make([]cand, len(logits))
	for i, l := range logits {
		c[i] = cand{int32(i), l}
	}
	slices.SortFunc(c, func(a, b cand) int {
		if a.logit != b.logit {
			return cmp.Compare(b.logit, a.logit)
		}
		return cmp.Compare(a.id, b.id)
	})
	if p.TopK > 0 && p.TopK < len(c) {
		c = c[:p.TopK]
	}
	if p.TopP > 0 && p.TopP < 1 {
		var z float64
		for _, x := range c {
			z += math.Exp(float64(x.logit - c[0].logit))
		}
		var cum float64
		for i, x := range c {
			cum += math.Exp(float64(x.logit-c[0].logit)) / z
			if cum >= float64(p.TopP) {
				c = c[:i+1]
				break
			}
		}
	}
	if p.MinP > 0 {
		minL := c[0].logit + float32(math.Log(float64(p.MinP)))
		n := 0
		for n < len(c) && c[n].logit >= minL {
			n++
		}
		c = c[:n]
	}
	ids := make([]int32, len(c))
	for i, x := range c {
		ids[i] = x.id
	}
	slices.Sort(ids)
	return ids
}

// TestFiltersMatchReference checks the partial sorting against a full sort
// on random logits, including many ties and top-p sets far beyond the first
// sorted chunk.
func TestFiltersMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	params := []Params{
		{Temperature: 1, TopK: 40},
		{Temperature: 1, TopK: 3000},
		{Temperature: 1, TopP: 0.9},
		{Temperature: 1, TopP: 0.999},
		{Temperature: 1, TopK: 100, TopP: 0.5, MinP: 0.01},
		{Temperature: 1, TopP: 0.95, MinP: 0.05},
		{Temperature: 1, MinP: 0.3},
	}
	for _, vocab := range []int{1, 7, 100, 5000} {
		for trial := range 5 {
			logits := make([]float32, vocab)
			for i := range logits {
				if trial%2 == 0 {
					logits[i] = float32(rng.IntN(8)) // ties everywhere
				} else {
					logits[i] = float32(rng.NormFloat64() * 3)
				}
			}
			for _, p := range params {
				s := newSampler(t, p, vocab)
				got, want := kept(s, logits), reference(logits, p)
				if !slices.Equal(got, want) {
					t.Fatalf("vocab %d trial %d %+v: kept %d tokens, reference %d\n got %v\nwant %v",
						vocab, trial, p, len(got), len(want), got, want)
				}
			}
		}
	}
}

func TestSampleStaysWithinTopK(t *testing.T) {
	s := newSampler(t, Params{Temperature: 1, TopK: 2, HasSeed: true, Seed: 7}, 5)
	logits := []float32{1, 0, 1.5, -1, 0.5}
	seen := map[int32]int{}
	for range 2000 {
		seen[s.Sample(slices.Clone(logits))]++
	}
	if len(seen) != 2 || seen[0] == 0 || seen[2] == 0 {
		t.Fatalf("top-2 draws hit %v, want only tokens 0 and 2, both", seen)
	}
}

func TestPenalties(t *testing.T) {
	cases := []struct {
		name     string
		p        Params
		accepted []int32
		logits   []float32
		want     []float32
	}{
		{
			name:     "repeat, frequency and presence",
			p:        Params{RepeatPenalty: 1.5, FrequencyPenalty: 0.1, PresencePenalty: 0.2},
			accepted: []int32{0, 1, 1, 3, 3, 3},
			logits:   []float32{2, -1, 0.5, 3, 1},
			// 0: 2/1.5-0.1-0.2; 1: -1*1.5-0.2-0.2; 3: 3/1.5-0.3-0.2
			want: []float32{2.0/1.5 - 0.1 - 0.2, -1.5 - 0.2 - 0.2, 0.5, 2 - 0.3 - 0.2, 1},
		},
		{
			name:     "window of two",
			p:        Params{RepeatPenalty: 1.5, FrequencyPenalty: 0.1, PresencePenalty: 0.2, RepeatLastN: 2},
			accepted: []int32{0, 1, 3, 3},
			logits:   []float32{2, -1, 0.5, 3, 1},
			want:     []float32{2, -1, 0.5, 2 - 0.2 - 0.2, 1},
		},
		{
			name:     "window slides",
			p:        Params{FrequencyPenalty: 1, RepeatLastN: 3},
			accepted: []int32{2, 2, 2, 0, 1, 2},
			logits:   []float32{0, 0, 0},
			want:     []float32{-1, -1, -1},
		},
		{
			name:     "repeat penalty on zero logit",
			p:        Params{RepeatPenalty: 2},
			accepted: []int32{0},
			logits:   []float32{0, 1},
			want:     []float32{0, 1},
		},
		{
			name:     "negative presence encourages",
			p:        Params{PresencePenalty: -0.5},
			accepted: []int32{1, 1},
			logits:   []float32{1, 1},
			want:     []float32{1, 1.5},
		},
		{
			name:     "out of range ids ignored",
			p:        Params{FrequencyPenalty: 1},
			accepted: []int32{-1, 7, 1 << 30, 1},
			logits:   []float32{1, 1},
			want:     []float32{1, 0},
		},
		{
			name:     "repeat penalty 1 and no other penalty is off",
			p:        Params{RepeatPenalty: 1},
			accepted: []int32{0},
			logits:   []float32{2, 1},
			want:     []float32{2, 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newSampler(t, tc.p, len(tc.logits))
			for _, id := range tc.accepted {
				s.Accept(id)
			}
			logits := slices.Clone(tc.logits)
			s.Sample(logits)
			for i := range logits {
				if math.Abs(float64(logits[i]-tc.want[i])) > 1e-6 {
					t.Fatalf("logits after penalties = %v, want %v", logits, tc.want)
				}
			}
		})
	}
}

func TestRepeatPenaltyChangesGreedyChoice(t *testing.T) {
	s := newSampler(t, Params{RepeatPenalty: 1.1}, 2)
	if got := s.Sample([]float32{2, 1.9}); got != 0 {
		t.Fatalf("before any history: got %d, want 0", got)
	}
	s.Accept(0)
	// 2/1.1 = 1.82 < 1.9
	if got := s.Sample([]float32{2, 1.9}); got != 1 {
		t.Fatalf("after accepting 0: got %d, want 1", got)
	}
	s.Reset()
	if got := s.Sample([]float32{2, 1.9}); got != 0 {
		t.Fatalf("after Reset: got %d, want 0", got)
	}
}

func drawSequence(s *Sampler, logits []float32, n int) []int32 {
	buf := make([]float32, len(logits))
	out := make([]int32, n)
	for i := range out {
		copy(buf, logits)
		out[i] = s.Sample(buf)
		s.Accept(out[i])
	}
	return out
}

func flatLogits(n int) []float32 {
	rng := rand.New(rand.NewPCG(9, 9))
	l := make([]float32, n)
	for i := range l {
		l[i] = float32(rng.Float64())
	}
	return l
}

func TestSeedReproducibility(t *testing.T) {
	logits := flatLogits(100)
	p := Params{Temperature: 1, TopP: 0.95, RepeatPenalty: 1.1, HasSeed: true, Seed: 42}
	a := drawSequence(newSampler(t, p, 100), logits, 300)
	b := drawSequence(newSampler(t, p, 100), logits, 300)
	if !slices.Equal(a, b) {
		t.Fatal("same seed gave different sequences")
	}

	p.Seed = 43
	c := drawSequence(newSampler(t, p, 100), logits, 300)
	// Two independent draws over ~95 near-equally likely tokens agree with
	// probability ~1/95; 300 draws that mostly agree would mean the seed
	// is not used.
	same := 0
	for i := range a {
		if a[i] == c[i] {
			same++
		}
	}
	if same > 50 {
		t.Fatalf("seeds 42 and 43 agree on %d of 300 draws", same)
	}

	s := newSampler(t, Params{Temperature: 1, HasSeed: true, Seed: 42}, 100)
	first := drawSequence(s, logits, 50)
	s.Reset()
	if again := drawSequence(s, logits, 50); !slices.Equal(first, again) {
		t.Fatal("Reset did not replay the sequence")
	}
}

func TestRandomSeedWithoutHasSeed(t *testing.T) {
	logits := flatLogits(100)
	s1 := newSampler(t, Params{Temperature: 1}, 100)
	s2 := newSampler(t, Params{Temperature: 1}, 100)
	if s1.Seed() == s2.Seed() {
		t.Fatalf("two unseeded samplers share seed %d", s1.Seed())
	}
	a := drawSequence(s1, logits, 100)
	if b := drawSequence(s2, logits, 100); slices.Equal(a, b) {
		t.Fatal("two unseeded samplers drew the same 100 tokens")
	}
	// The random seed is reported, so the generation can be replayed.
	replay := newSampler(t, Params{Temperature: 1, HasSeed: true, Seed: s1.Seed()}, 100)
	if b := drawSequence(replay, logits, 100); !slices.Equal(a, b) {
		t.Fatal("replaying with the reported seed gave a different sequence")
	}
}

func TestTemperatureDistribution(t *testing.T) {
	// Token 1 is twice as likely as token 0 at temperature 1, so
	// P(1) = 2^(1/T) / (1 + 2^(1/T)).
	logits := logitsOf(1.0/3, 2.0/3)
	const n = 30000
	for _, tc := range []struct {
		temp   float32
		lo, hi float64
	}{
		{1, 0.64, 0.69},   // 0.667
		{2, 0.56, 0.61},   // 0.586
		{0.5, 0.78, 0.82}, // 0.8
		{0.1, 0.99, 1},    // 0.999
	} {
		s := newSampler(t, Params{Temperature: tc.temp, HasSeed: true, Seed: 1}, 2)
		ones := 0
		for range n {
			if s.Sample(slices.Clone(logits)) == 1 {
				ones++
			}
		}
		if f := float64(ones) / n; f < tc.lo || f > tc.hi {
			t.Errorf("temperature %v: token 1 drawn %.3f of the time, want within [%v, %v]", tc.temp, f, tc.lo, tc.hi)
		}
	}
}

func TestSampleEdgeCases(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	s := newSampler(t, Params{Temperature: 0.7, TopP: 0.9, HasSeed: true}, 4)
	if got := s.Sample(nil); got != -1 {
		t.Errorf("Sample(nil) = %d, want -1", got)
	}
	for range 200 {
		if got := s.Sample([]float32{nan, 0, nan, 0}); got != 1 && got != 3 {
			t.Fatalf("sampled NaN logit: token %d", got)
		}
	}
	if got := s.Sample([]float32{0, inf, 1, inf}); got != 1 {
		t.Errorf("with +Inf logits got %d, want the first +Inf (1)", got)
	}
	negInf := float32(math.Inf(-1))
	if got := s.Sample([]float32{negInf, nan, negInf, negInf}); got != 0 {
		t.Errorf("with nothing finite got %d, want 0", got)
	}
	if got := s.Sample([]float32{negInf, negInf, 3, negInf}); got != 2 {
		t.Errorf("with one finite logit got %d, want 2", got)
	}
	if got := s.Sample([]float32{-1, 5}); got != 1 && got != 0 {
		t.Errorf("short logits gave %d", got)
	}
	long := make([]float32, 10)
	long[9] = 100
	if got := s.Sample(long); got != 9 {
		t.Errorf("logits longer than the vocabulary gave %d, want 9", got)
	}
	tiny := newSampler(t, Params{Temperature: 1e-40, HasSeed: true}, 3)
	if got := tiny.Sample([]float32{1, 3, 2}); got != 1 {
		t.Errorf("denormal temperature gave %d, want the argmax 1", got)
	}
}

func typicalParams() Params {
	return Params{
		Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05,
		RepeatPenalty: 1.1, FrequencyPenalty: 0.1, PresencePenalty: 0.1,
		HasSeed: true, Seed: 3,
	}
}

func TestSampleDoesNotAllocate(t *testing.T) {
	const vocab = 32000
	logits := flatLogits(vocab)
	buf := make([]float32, vocab)
	for _, tc := range []struct {
		name string
		p    Params
	}{
		{"greedy with penalties", Params{RepeatPenalty: 1.2}},
		{"full chain", typicalParams()},
		{"top-p only", Params{Temperature: 1, TopP: 0.9, HasSeed: true}},
		{"min-p only", Params{Temperature: 1, MinP: 0.1, HasSeed: true}},
	} {
		s := newSampler(t, tc.p, vocab)
		for i := range 100 {
			s.Accept(int32(i * 7))
		}
		allocs := testing.AllocsPerRun(50, func() {
			copy(buf, logits)
			s.Accept(s.Sample(buf))
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per Sample+Accept, want 0", tc.name, allocs)
		}
	}
}

func TestValidate(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	bad := []struct {
		p    Params
		want string
	}{
		{Params{Temperature: -0.1}, "temperature"},
		{Params{Temperature: nan}, "temperature"},
		{Params{Temperature: inf}, "temperature"},
		{Params{TopK: -1}, "top_k"},
		{Params{TopP: -0.1}, "top_p"},
		{Params{TopP: 1.5}, "top_p"},
		{Params{TopP: nan}, "top_p"},
		{Params{MinP: -1}, "min_p"},
		{Params{MinP: nan}, "min_p"},
		{Params{MinP: 2}, "min_p"},
		{Params{RepeatPenalty: -1}, "repeat_penalty"},
		{Params{RepeatPenalty: nan}, "repeat_penalty"},
		{Params{RepeatLastN: -1}, "repeat_last_n"},
		{Params{RepeatLastN: MaxRepeatLastN + 1}, "repeat_last_n"},
		{Params{PresencePenalty: nan}, "presence_penalty"},
		{Params{FrequencyPenalty: -inf}, "frequency_penalty"},
	}
	for _, tc := range bad {
		err := tc.p.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error about %s", tc.p, err, tc.want)
		}
		if _, err := New(tc.p, 10); err == nil {
			t.Errorf("New accepted %+v", tc.p)
		}
	}
	err := Params{TopK: -1, MinP: nan}.Validate()
	if err == nil || !strings.Contains(err.Error(), "top_k") || !strings.Contains(err.Error(), "min_p") {
		t.Errorf("two bad fields: got %v, want both named", err)
	}

	good := []Params{
		{},
		typicalParams(),
		{Temperature: 2, TopP: 1, MinP: 1, RepeatPenalty: 0, RepeatLastN: MaxRepeatLastN},
		{PresencePenalty: -2, FrequencyPenalty: -2},
	}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("Validate(%+v) = %v, want nil", p, err)
		}
	}
}

func TestNewRejectsBadVocab(t *testing.T) {
	for _, v := range []int{0, -1, math.MaxInt32 + 1} {
		if _, err := New(Params{}, v); err == nil || !strings.Contains(err.Error(), "vocabulary") {
			t.Errorf("New(vocab=%d) = %v, want a vocabulary error", v, err)
		}
	}
}

func BenchmarkSample(b *testing.B) {
	rng := rand.New(rand.NewPCG(5, 5))
	for _, vocab := range []int{32000, 128256} {
		// Logits with a spread like a real model's, so top-p stops early.
		logits := make([]float32, vocab)
		for i := range logits {
			logits[i] = float32(rng.NormFloat64() * 3)
		}
		for _, bc := range []struct {
			name string
			p    Params
		}{
			{"greedy", Params{}},
			{"typical", typicalParams()},
			{"top-p", Params{Temperature: 1, TopP: 0.95, HasSeed: true}},
		} {
			b.Run(fmt.Sprintf("%s/vocab=%d", bc.name, vocab), func(b *testing.B) {
				s, err := New(bc.p, vocab)
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]float32, vocab)
				b.ReportAllocs()
				for b.Loop() {
					copy(buf, logits)
					s.Accept(s.Sample(buf))
				}
			})
		}
	}
}

// A sampler resumed at step n from the same accepted tokens draws what the
// original drew from step n on: the draws depend on (seed, step) only.
func TestSamplerResumes(t *testing.T) {
	p := Params{Temperature: 1.5, TopK: 50, RepeatPenalty: 1.1, HasSeed: true, Seed: 77}
	r := rand.New(rand.NewPCG(3, 4))
	logits := make([][]float32, 40)
	for i := range logits {
		logits[i] = make([]float32, 200)
		for j := range logits[i] {
			logits[i][j] = float32(r.NormFloat64())
		}
	}
	orig := newSampler(t, p, 200)
	var ids []int32
	for _, l := range logits {
		id := orig.Sample(slices.Clone(l))
		orig.Accept(id)
		ids = append(ids, id)
	}
	for _, at := range []int{1, 17, 39} {
		again := newSampler(t, p, 200)
		for _, id := range ids[:at] {
			again.Accept(id)
		}
		again.Resume(at)
		for i := at; i < len(ids); i++ {
			id := again.Sample(slices.Clone(logits[i]))
			again.Accept(id)
			if id != ids[i] {
				t.Fatalf("resumed at %d: step %d drew %d, the original %d", at, i, id, ids[i])
			}
		}
	}
}

func TestSampleMasked(t *testing.T) {
	const vocab = 200
	mask := make([]uint64, (vocab+63)/64)
	allow := []int32{3, 64, 65, 130, 199}
	for _, id := range allow {
		mask[id>>6] |= 1 << (id & 63)
	}
	logits := make([]float32, vocab)
	for i := range logits {
		logits[i] = float32(i % 7) // the best tokens (6, 13, ...) are all masked
	}
	for _, p := range []Params{{}, {Temperature: 1, HasSeed: true, Seed: 3}, {Temperature: 0.7, TopK: 2, HasSeed: true}, {Temperature: 1, TopP: 0.5, MinP: 0.1, RepeatPenalty: 1.3}} {
		s := newSampler(t, p, vocab)
		seen := map[int32]int{}
		for range 400 {
			id := s.SampleMasked(slices.Clone(logits), mask)
			if !slices.Contains(allow, id) {
				t.Fatalf("%+v: sampled %d, outside the mask", p, id)
			}
			s.Accept(id)
			seen[id]++
		}
		if p.Temperature == 0 && seen[130] != 400 { // 130%7 = 4, the best allowed logit
			t.Errorf("greedy: sampled %v, want only 130", seen)
		}
	}
	// Masked sampling at temperature 1 draws from the softmax of the
	// allowed logits alone.
	s := newSampler(t, Params{Temperature: 1, HasSeed: true, Seed: 9}, vocab)
	counts := map[int32]int{}
	const draws = 20000
	for range draws {
		counts[s.SampleMasked(slices.Clone(logits), mask)]++
	}
	var z float64
	for _, id := range allow {
		z += math.Exp(float64(logits[id]))
	}
	for _, id := range allow {
		want := math.Exp(float64(logits[id])) / z
		if got := float64(counts[id]) / draws; math.Abs(got-want) > 0.02 {
			t.Errorf("token %d drawn %.3f of the time, want %.3f", id, got, want)
		}
	}
	nan := slices.Clone(logits)
	for _, id := range allow {
		nan[id] = float32(math.NaN())
	}
	if id := newSampler(t, Params{}, vocab).SampleMasked(nan, mask); id != 3 {
		t.Errorf("every allowed logit NaN: got %d, want the lowest allowed id 3", id)
	}
	if id := newSampler(t, Params{}, vocab).SampleMasked(slices.Clone(logits), make([]uint64, 4)); id != -1 {
		t.Errorf("empty mask: got %d, want -1", id)
	}
}
