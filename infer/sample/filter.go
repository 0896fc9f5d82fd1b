package sample

import (
	"math"
	"slices"
)

// Candidates are packed into uint64 keys whose ascending order is the
// sampling order: higher logit first, lower id on ties. Comparing keys is a
// single integer comparison, and the order is total, so every selection is
// deterministic.
func key(id int32, logit float32) uint64 {
	b := math.Float32bits(logit)
	if b&(1<<31) != 0 {
		b = ^b
	} else {
		b |= 1 << 31
	}
	// b now grows with the logit; complement it so the best comes first.
	return uint64(^b)<<32 | uint64(uint32(id))
}

func keyID(k uint64) int32 { return int32(uint32(k)) }

func keyLogit(k uint64) float32 {
	b := ^uint32(k >> 32)
	if b&(1<<31) != 0 {
		b &^= 1 << 31
	} else {
		b = ^b
	}
	return math.Float32frombits(b)
}

// smallRange is where the selections stop partitioning and sort.
const smallRange = 16

// maxPasses bounds the partition passes of one selection. Median-of-three
// pivots need about 2*log2(n) passes; past this bound the input is
// adversarial and the rest is sorted instead, which is O(n log n) at worst.
const maxPasses = 64

// filter builds the candidate keys and applies top-k, top-p and min-p; the
// temperature comes after them, in draw. It also returns the best key. ok is
// false when no candidate has a finite, comparable logit (all NaN or -Inf,
// or a +Inf), which the caller settles by argmax.
func (s *Sampler) filter(logits []float32) (c []uint64, best uint64, ok bool) {
	if cap(s.cands) < len(logits) {
		// Only reachable when the caller passes more logits than the
		// vocabulary it declared.
		s.cands = make([]uint64, len(logits))
		s.weightByID = make([]float32, len(logits))
		s.weights = make([]float32, len(logits))
	}
	c = s.cands[:0]
	best = math.MaxUint64
	for i, l := range logits {
		if math.IsNaN(float64(l)) || math.IsInf(float64(l), -1) {
			continue
		}
		if math.IsInf(float64(l), 1) {
			return nil, 0, false
		}
		if l == 0 {
			l = 0 // -0 and +0 must tie, so ids break it
		}
		k := key(int32(i), l)
		best = min(best, k)
		c = append(c, k)
	}
	if len(c) == 0 {
		return nil, 0, false
	}
	// The best candidate survives every filter.
	if k := s.p.TopK; k > 0 && k < len(c) {
		selectK(c, k)
		c = c[:k]
	}
	if p := s.p.TopP; p > 0 && p < 1 {
		c = c[:s.topP(c, best, p)]
	}
	if p := s.p.MinP; p > 0 {
		c = minP(c, best, p)
	}
	return c, best, true
}

// topP returns how many candidates to keep: after it, c[:n] is the smallest
// set of best candidates whose softmax mass (at temperature 1) reaches p.
// It selects by weighted quickselect, so nothing is sorted in full.
func (s *Sampler) topP(c []uint64, best uint64, p float32) int {
	maxL := keyLogit(best)
	w := s.weightByID
	var z float64
	for _, k := range c {
		x := float32(math.Exp(float64(keyLogit(k) - maxL)))
		w[keyID(k)] = x
		z += float64(x)
	}
	need := float64(p) * z
	lo, hi := 0, len(c)
	for pass := 0; lo < hi; pass++ {
		if hi-lo <= smallRange || pass > maxPasses {
			slices.Sort(c[lo:hi])
			for i := lo; i < hi; i++ {
				need -= float64(w[keyID(c[i])])
				if need <= 0 {
					return i + 1
				}
			}
			return hi
		}
		m := lo + partition(c[lo:hi])
		var mass float64
		for _, k := range c[lo:m] {
			mass += float64(w[keyID(k)])
		}
		if mass >= need {
			hi = m
			continue
		}
		need -= mass + float64(w[keyID(c[m])])
		if need <= 0 {
			return m + 1
		}
		lo = m + 1
	}
	return lo
}

// minP keeps the candidates whose probability is at least p times the best
// one's, comparing logits: l >= max + ln(p).
func minP(c []uint64, best uint64, p float32) []uint64 {
	threshold := keyLogit(best) + float32(math.Log(float64(p)))
	n := 0
	for _, k := range c {
		if keyLogit(k) >= threshold {
			c[n] = k
			n++
		}
	}
	return c[:n]
}

// selectK moves the k smallest keys into c[:k], in no particular order.
func selectK(c []uint64, k int) {
	lo, hi := 0, len(c)
	// Invariant: c[:lo] < c[lo:hi] < c[hi:], and lo <= k < hi.
	for pass := 0; hi-lo > 1; pass++ {
		if hi-lo <= smallRange || pass > maxPasses {
			slices.Sort(c[lo:hi])
			return
		}
		m := lo + partition(c[lo:hi])
		switch {
		case m == k:
			return
		case m < k:
			lo = m + 1
		default:
			hi = m
		}
	}
}

// partition puts the median of c's first, middle and last keys at its
// sorted place and returns that index: smaller keys before it, larger after.
// Keys are unique, so there are no equal keys to balance.
func partition(c []uint64) int {
	a, b, last := 0, len(c)/2, len(c)-1
	if c[b] < c[a] {
		c[a], c[b] = c[b], c[a]
	}
	if c[last] < c[b] {
		c[b], c[last] = c[last], c[b]
		if c[b] < c[a] {
			c[a], c[b] = c[b], c[a]
		}
	}
	c[b], c[last] = c[last], c[b]
	pivot := c[last]
	i := 0
	for j := range last {
		if c[j] < pivot {
			c[i], c[j] = c[j], c[i]
			i++
		}
	}
	c[i], c[last] = c[last], c[i]
	return i
}
