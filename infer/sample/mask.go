package sample

import (
	"math"
	"math/bits"
)

// SampleMasked samples as Sample does among the tokens allowed by mask, a
// bit set over the vocabulary (token id i is bit i%64 of mask[i/64]): every
// other logit is set to -Inf first, so penalties, filters and the softmax see
// only the allowed tokens. It returns -1 when mask allows no token of
// logits; when every allowed logit is NaN or -Inf, the lowest allowed id.
func (s *Sampler) SampleMasked(logits []float32, mask []uint64) int32 {
	first := int32(-1)
	ninf := float32(math.Inf(-1))
	for w := 0; w*64 < len(logits); w++ {
		var m uint64
		if w < len(mask) {
			m = mask[w]
		}
		if first < 0 && m != 0 {
			first = int32(w*64 + bits.TrailingZeros64(m))
		}
		if m == math.MaxUint64 {
			continue
		}
		end := min(w*64+64, len(logits))
		for i := w * 64; i < end; i++ {
			if m&(1<<(i-w*64)) == 0 {
				logits[i] = ninf
			}
		}
	}
	if first < 0 || int(first) >= len(logits) {
		s.step++ // the draw's position still advances, as every step's does
		return -1
	}
	id := s.Sample(logits)
	if id < 0 || mask[id>>6]&(1<<(id&63)) == 0 {
		return first
	}
	return id
}
