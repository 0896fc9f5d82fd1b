package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// pcgStream separates the two seed words of each step's PCG, so one uint64
// is all a caller has to remember to replay a generation.
const pcgStream = 0x9e3779b97f4a7c15

// Sampler turns logits into token ids. It owns all the memory it needs, made
// in New, so Sample does not allocate. A Sampler is not safe for concurrent
// use; use one per sequence.
type Sampler struct {
	p     Params
	vocab int
	seed  uint64
	step  uint64 // draws so far: the next draw's position in the sequence

	// Penalty window: ring holds the last len(ring) accepted ids, counts the
	// occurrences of each id in it and distinct the ids with a non-zero
	// count (slot[id] is an id's index in distinct), so penalties cost
	// O(window), not O(vocab).
	penalize bool
	ring     []int32
	ringPos  int
	ringLen  int
	counts   []int32
	slot     []int32
	distinct []int32

	// Scratch for the filters and the draw, vocabulary-sized: the
	// candidates as keys (see key), top-p's weights by token id and the
	// draw's weights by position.
	cands      []uint64
	weightByID []float32
	weights    []float32
}

// New validates p and returns a Sampler for a vocabulary of vocabSize tokens.
func New(p Params, vocabSize int) (*Sampler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if vocabSize <= 0 || vocabSize > math.MaxInt32 {
		return nil, fmt.Errorf("new sampler: vocabulary size must be within [1, %d], got %d", math.MaxInt32, vocabSize)
	}
	for id := range p.LogitBias {
		if id < 0 || int(id) >= vocabSize {
			return nil, fmt.Errorf("new sampler: logit_bias names token %d, outside the vocabulary of %d", id, vocabSize)
		}
	}
	seed := p.Seed
	if !p.HasSeed {
		seed = rand.Uint64()
	}
	s := &Sampler{
		p:          p,
		vocab:      vocabSize,
		seed:       seed,
		penalize:   p.penalize(),
		cands:      make([]uint64, vocabSize),
		weightByID: make([]float32, vocabSize),
		weights:    make([]float32, vocabSize),
	}
	if s.penalize {
		n := p.lastN()
		s.ring = make([]int32, n)
		s.distinct = make([]int32, 0, min(n, vocabSize))
		s.counts = make([]int32, vocabSize)
		s.slot = make([]int32, vocabSize)
	}
	return s, nil
}

// Seed returns the seed in use: Params.Seed, or the random one New picked.
func (s *Sampler) Seed() uint64 { return s.seed }

// Reset forgets the accepted tokens and restarts the random sequence from
// the same seed.
func (s *Sampler) Reset() {
	for _, id := range s.distinct {
		s.counts[id] = 0
	}
	s.distinct = s.distinct[:0]
	s.ringPos, s.ringLen = 0, 0
	s.step = 0
}

// Resume sets the position of the next draw: a sampler given the same
// accepted tokens and resumed at step n continues exactly as the one that
// made the first n draws. Each draw depends only on the seed and its step,
// never on what was drawn before, so a sequence can be re-created anywhere
// from its prompt, its seed and the tokens it produced.
func (s *Sampler) Resume(step int) { s.step = uint64(step) }

// uniform returns the draw of a step, in [0, 1).
func (s *Sampler) uniform(step uint64) float64 {
	// A PCG seeded from (seed, step) through splitmix64 gives each step an
	// independent stream; its first output is the draw.
	var rng rand.PCG
	rng.Seed(splitmix64(s.seed^pcgStream*(step+1)), splitmix64(s.seed+step))
	return float64(rng.Uint64()>>11) * 0x1p-53
}

func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Accept records a token for the penalties: feed it the prompt tokens and
// every sampled token. Ids outside the vocabulary are ignored, since no
// logit can be penalised for them.
func (s *Sampler) Accept(id int32) {
	if !s.penalize || id < 0 || int(id) >= s.vocab {
		return
	}
	if s.ringLen == len(s.ring) {
		s.forget(s.ring[s.ringPos])
	} else {
		s.ringLen++
	}
	s.ring[s.ringPos] = id
	s.ringPos++
	if s.ringPos == len(s.ring) {
		s.ringPos = 0
	}
	if s.counts[id] == 0 {
		s.slot[id] = int32(len(s.distinct))
		s.distinct = append(s.distinct, id)
	}
	s.counts[id]++
}

func (s *Sampler) forget(id int32) {
	s.counts[id]--
	if s.counts[id] > 0 {
		return
	}
	i, last := s.slot[id], s.distinct[len(s.distinct)-1]
	s.distinct[i] = last
	s.slot[last] = i
	s.distinct = s.distinct[:len(s.distinct)-1]
}

// Sample applies the logit bias and the penalties to logits (in place), runs the filters and
// returns the chosen token id. logits normally has vocabSize entries; a
// shorter slice samples among its own entries, and an empty one returns -1.
// NaN logits are never chosen unless every logit is NaN or -Inf, in which
// case the lowest id wins.
func (s *Sampler) Sample(logits []float32) int32 {
	if len(logits) == 0 {
		return -1
	}
	step := s.step
	s.step++
	for id, b := range s.p.LogitBias {
		if int(id) < len(logits) {
			logits[id] += b
		}
	}
	if s.penalize {
		s.applyPenalties(logits)
	}
	if s.p.Temperature == 0 {
		return argmax(logits)
	}
	c, best, ok := s.filter(logits)
	if !ok {
		return argmax(logits)
	}
	return s.draw(c, best, step)
}

// applyPenalties follows llama.cpp's penalties sampler: a seen token's
// logit is divided by the repeat penalty when positive and multiplied by it
// otherwise, so a penalty above 1 always makes it less likely; then the
// frequency and presence penalties are subtracted.
func (s *Sampler) applyPenalties(logits []float32) {
	rp := s.p.RepeatPenalty
	if rp == 0 {
		rp = 1
	}
	for _, id := range s.distinct {
		if int(id) >= len(logits) {
			continue
		}
		count := float32(s.counts[id])
		l := logits[id]
		if l <= 0 {
			l *= rp
		} else {
			l /= rp
		}
		logits[id] = l - count*s.p.FrequencyPenalty - s.p.PresencePenalty
	}
}

// draw takes the softmax of the candidates' logits divided by the
// temperature and picks one with the PRNG. Scaling the difference to the
// best logit in float64, rather than each logit, keeps a tiny temperature
// from overflowing: its limit, the argmax, comes out exactly.
func (s *Sampler) draw(c []uint64, best uint64, step uint64) int32 {
	maxL := float64(keyLogit(best))
	invT := 1 / float64(s.p.Temperature)
	w := s.weights[:len(c)]
	var sum float64
	for i, k := range c {
		w[i] = float32(math.Exp((float64(keyLogit(k)) - maxL) * invT))
		sum += float64(w[i])
	}
	u := s.uniform(step) * sum
	// Summing the same float32 weights in the same order as above makes the
	// running total reach sum exactly; if rounding still leaves u beyond it,
	// the last token with any weight is where the draw landed.
	chosen := keyID(best)
	var acc float64
	for i, k := range c {
		if w[i] == 0 {
			continue
		}
		chosen = keyID(k)
		acc += float64(w[i])
		if u < acc {
			break
		}
	}
	return chosen
}

// argmax returns the index of the largest logit, the lowest on ties. NaN
// never wins; if nothing beats -Inf the answer is 0.
func argmax(logits []float32) int32 {
	best, bestL := 0, float32(math.Inf(-1))
	for i, l := range logits {
		if l > bestL {
			best, bestL = i, l
		}
	}
	return int32(best)
}
