package quant

import (
	"fmt"
	"math"
)

// Activation holds an input vector prepared once per matrix-vector product in the format its weights
// dot against. Its buffers are kept as separate arrays (quants, scales, sums) so that vector kernels
// load them directly. Buffers are reused: once warmed up for a length, Prepare does not allocate.
type Activation struct {
	format Type // F32, Q8_0 or Q8_K
	n      int  // elements; -1 after a failed Prepare, so a stale vector is never used

	f32   []float32 // F32: a copy of x
	qs    []int8    // Q8_0, Q8_K: the quants
	d     []float32 // Q8_0, Q8_K: one scale per block (Q8_0's rounded to fp16, as ggml stores it)
	bsums []int16   // Q8_K: the sum of each 16 quants
}

// vecDotType returns the activation format that weights of type t dot against.
func vecDotType(t Type) (Type, bool) {
	switch t {
	case F32, F16, BF16:
		return F32, true
	case Q8_0, Q4_0:
		return Q8_0, true
	case Q4_K, Q6_K:
		return Q8_K, true
	}
	return 0, false
}

// Prepare converts x into the format that weights of type weight dot against. One prepared
// activation serves every matrix whose type shares that format (Q4_K and Q6_K, say).
func (a *Activation) Prepare(weight Type, x []float32) error {
	a.n = -1
	format, ok := vecDotType(weight)
	if !ok {
		return fmt.Errorf("prepare activation: %s: %w", weight, ErrUnsupported)
	}
	n := len(x)
	if bs := format.BlockSize(); n%bs != 0 {
		return fmt.Errorf("prepare activation for %s: length %d is not a multiple of %d", weight, n, bs)
	}
	switch format {
	case F32:
		a.f32 = grow(a.f32, n)
		copy(a.f32, x)
	case Q8_0:
		a.qs = grow(a.qs, n)
		a.d = grow(a.d, n/qk0)
		quantizeActQ8_0(a.qs, a.d, x)
	case Q8_K:
		a.qs = grow(a.qs, n)
		a.d = grow(a.d, n/qkK)
		a.bsums = grow(a.bsums, n/16)
		quantizeActQ8K(a.qs, a.d, a.bsums, x)
	}
	a.format, a.n = format, n
	return nil
}

// Serves reports whether the activation holds a prepared vector in the
// format that weights of type weight dot against, so one Prepare can serve
// several matrices that read the same input.
func (a *Activation) Serves(weight Type) bool {
	format, ok := vecDotType(weight)
	return ok && a.n > 0 && a.format == format
}

// grow returns s resized to n, reusing its array when it is large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// quantizeActQ8_0 is ggml's quantize_row_q8_0_ref with the scale kept as the float32 value of the
// fp16 ggml stores, so integer dot products match ggml's.
func quantizeActQ8_0(qs []int8, ds []float32, x []float32) {
	for b := range ds {
		xb := x[b*qk0 : b*qk0+qk0]
		q := qs[b*qk0 : b*qk0+qk0]
		var amax float32
		for _, v := range xb {
			amax = max(amax, abs32(v))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		ds[b] = F16ToF32(F32ToF16(d))
		for j, v := range xb {
			q[j] = int8(math.Round(float64(v * id)))
		}
	}
}

// quantizeActQ8K is ggml's quantize_row_q8_K_ref: scale -127/max where max is the element of largest
// magnitude, and per-16 sums of the quants, which the K-quant kernels use to apply mins and offsets
// once per group instead of once per element.
func quantizeActQ8K(qs []int8, ds []float32, bsums []int16, x []float32) {
	for b := range ds {
		xb := x[b*qkK : b*qkK+qkK]
		q := qs[b*qkK : b*qkK+qkK]
		sums := bsums[b*16 : b*16+16]
		var amax, mx float32
		for _, v := range xb {
			if a := abs32(v); a > amax {
				amax, mx = a, v
			}
		}
		if amax == 0 {
			ds[b] = 0
			clear(q)
			clear(sums)
			continue
		}
		iscale := -127 / mx
		for j, v := range xb {
			q[j] = int8(clampInt(nearestInt(iscale*v), -128, 127))
		}
		for j := range sums {
			var s int
			for _, v := range q[16*j : 16*j+16] {
				s += int(v)
			}
			sums[j] = int16(s)
		}
		ds[b] = 1 / iscale
	}
}
