package sample

import "math"

// MaxTopLogprobs bounds the alternatives Logprobs reports, as OpenAI does.
const MaxTopLogprobs = 20

// MinLogprob is reported for a token with no probability at all (masked,
// or -Inf): OpenAI's floor, and a number JSON can carry.
const MinLogprob = -9999

// Candidate is a token with its log-probability.
type Candidate struct {
	ID      int32
	Logprob float32
}

// Logprobs returns the log-probability of id under the softmax of logits at
// temperature 1, and the k most likely tokens (k at most MaxTopLogprobs),
// most likely first, ties to the lower id, appended to top[:0]. Given the
// logits a Sample call left (penalties applied, masked tokens at -Inf), it
// reports the distribution the model gave after the penalties, the bias and
// any grammar, before the temperature and the truncating filters: what
// OpenAI reports, and a number that does not depend on how the token was
// drawn. NaN counts as -Inf.
func Logprobs(logits []float32, id int32, k int, top []Candidate) (float32, []Candidate) {
	top = top[:0]
	k = min(max(k, 0), MaxTopLogprobs, len(logits))
	maxL := math.Inf(-1)
	for _, l := range logits {
		if float64(l) > maxL {
			maxL = float64(l)
		}
	}
	if math.IsInf(maxL, 0) {
		// Nothing finite to normalise against: every token is as unlikely.
		return MinLogprob, top
	}
	var sum float64
	for _, l := range logits {
		if l == l {
			sum += math.Exp(float64(l) - maxL)
		}
	}
	lse := maxL + math.Log(sum)
	lp := func(l float32) float32 {
		if l != l || math.IsInf(float64(l), -1) {
			return MinLogprob
		}
		return max(float32(float64(l)-lse), MinLogprob)
	}
	for i, l := range logits {
		if l != l || math.IsInf(float64(l), -1) {
			continue
		}
		// Insertion into the k best so far: k is small, so this is a
		// pass over the vocabulary.
		if len(top) == k && (k == 0 || l <= logits[top[k-1].ID]) {
			continue
		}
		if len(top) < k {
			top = append(top, Candidate{})
		}
		j := len(top) - 1
		for ; j > 0 && logits[top[j-1].ID] < l; j-- {
			top[j] = top[j-1]
		}
		top[j] = Candidate{ID: int32(i)}
	}
	for j := range top {
		top[j].Logprob = lp(logits[top[j].ID])
	}
	chosen := float32(MinLogprob)
	if id >= 0 && int(id) < len(logits) {
		chosen = lp(logits[id])
	}
	return chosen, top
}
