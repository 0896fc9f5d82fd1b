package quant

import (
	"fmt"
	"math"
)

// Activation holds a batch of input vectors, all of one length, prepared once per matrix product in
// the format their weights dot against. Its buffers are kept as separate arrays (quants, scales,
// sums) so that vector kernels load them directly; vector v occupies the v-th stretch of each.
// Buffers are reused: once warmed up for a size, Prepare does not allocate.
type Activation struct {
	format Type // vecDotType of the weights: F32, F16, BF16 (float values rounded so), Q8_0 or Q8_K
	n      int  // elements per vector; -1 after a failed Prepare, so a stale batch is never used
	count  int  // vectors

	f32   []float32 // F32, F16, BF16: the values, rounded to the weight's float type as ggml does
	qs    []int8    // Q8_0, Q8_K: the quants
	d     []float32 // Q8_0, Q8_K: one scale per block (Q8_0's rounded to fp16, as ggml stores it)
	bsums []int16   // Q8_K: the sum of each 16 quants

	one [1]float32 // DotRow's result: a local would escape through the kernel table
}

// vecDotType returns the activation format that weights of type t dot against: ggml converts the
// activation to F16 for F16 weights and to BF16 for BF16 weights before the dot product.
func vecDotType(t Type) (Type, bool) {
	switch t {
	case F32, F16, BF16:
		return t, true
	case Q8_0, Q4_0:
		return Q8_0, true
	case Q4_K, Q6_K:
		return Q8_K, true
	}
	return 0, false
}

// Prepare converts the single vector x into the format that weights of type weight dot against.
func (a *Activation) Prepare(weight Type, x []float32) error {
	return a.PrepareBatch(weight, x, len(x))
}

// PrepareBatch converts the len(x)/n vectors of n elements stored one after another in x into the
// format that weights of type weight dot against. One prepared batch serves every matrix whose type
// shares that format (Q4_K and Q6_K, say).
func (a *Activation) PrepareBatch(weight Type, x []float32, n int) error {
	a.n = -1
	format, ok := vecDotType(weight)
	if !ok {
		return fmt.Errorf("prepare activation: %s: %w", weight, ErrUnsupported)
	}
	if n <= 0 || len(x)%n != 0 {
		return fmt.Errorf("prepare activation for %s: %d values do not make vectors of %d", weight, len(x), n)
	}
	if bs := format.BlockSize(); n%bs != 0 {
		return fmt.Errorf("prepare activation for %s: length %d is not a multiple of %d", weight, n, bs)
	}
	count := len(x) / n
	switch format {
	case F32:
		a.f32 = grow(a.f32, len(x))
		copy(a.f32, x)
	case F16:
		a.f32 = grow(a.f32, len(x))
		actKernels.roundF16(a.f32, x)
	case BF16:
		a.f32 = grow(a.f32, len(x))
		actKernels.roundBF16(a.f32, x)
	case Q8_0:
		a.qs = grow(a.qs, len(x))
		a.d = grow(a.d, len(x)/qk0)
		actKernels.q8_0(a.qs, a.d, x)
	case Q8_K:
		a.qs = grow(a.qs, len(x))
		a.d = grow(a.d, len(x)/qkK)
		a.bsums = grow(a.bsums, len(x)/16)
		actKernels.q8K(a.qs, a.d, a.bsums, x)
	}
	a.format, a.n, a.count = format, n, count
	return nil
}

// Serves reports whether the activation holds a prepared batch in the format that weights of type
// weight dot against, so one Prepare can serve several matrices that read the same input.
func (a *Activation) Serves(weight Type) bool {
	format, ok := vecDotType(weight)
	return ok && a.n > 0 && a.format == format
}

// Len is the number of elements per vector; Count is the number of vectors.
func (a *Activation) Len() int   { return max(a.n, 0) }
func (a *Activation) Count() int { return a.count }

// vec is one prepared vector of a batch: the slices of the batch's buffers that belong to it.
// Kernels take it by value, so a dot product through the dispatch table allocates nothing.
type vec struct {
	f32   []float32
	qs    []int8
	d     []float32
	bsums []int16
}

// vector returns vector v of the batch.
func (a *Activation) vector(v int) vec {
	n := a.n
	switch a.format {
	case F32, F16, BF16:
		return vec{f32: a.f32[v*n : (v+1)*n]}
	case Q8_0:
		return vec{qs: a.qs[v*n : (v+1)*n], d: a.d[v*n/qk0 : (v+1)*n/qk0]}
	default:
		return vec{qs: a.qs[v*n : (v+1)*n], d: a.d[v*n/qkK : (v+1)*n/qkK], bsums: a.bsums[v*n/16 : (v+1)*n/16]}
	}
}

// grow returns s resized to n, reusing its array when it is large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// actKernels convert activations, once per vector and matrix product. Like the dot kernels, the
// plain Go versions are the oracle, and an architecture file may replace them at init with ones
// that give the same bits.
var actKernels = struct {
	roundF16, roundBF16 func(dst, src []float32)
	q8_0                func(qs []int8, ds []float32, x []float32)
	q8K                 func(qs []int8, ds []float32, bsums []int16, x []float32)
}{roundRowsF16, roundRowsBF16, quantizeActQ8_0, quantizeActQ8K}

func roundRowsF16(dst, src []float32) {
	for i, v := range src {
		dst[i] = f16Table[F32ToF16(v)]
	}
}

func roundRowsBF16(dst, src []float32) {
	for i, v := range src {
		dst[i] = BF16ToF32(F32ToBF16(v))
	}
}

// quantizeActQ8_0 is ggml's quantize_row_q8_0 as x86 builds run it: d = amax/127 stored as fp16,
// and q = round-half-even(x * (127/amax)). The scalar reference multiplies by 1/d instead, which
// rounds differently often enough to move logits by 1e-2; the scale is kept as the float32 value
// of the fp16 ggml stores, so integer dot products match ggml's.
func quantizeActQ8_0(qs []int8, ds []float32, x []float32) {
	for b := range ds {
		xb := x[b*qk0 : b*qk0+qk0]
		q := qs[b*qk0 : b*qk0+qk0]
		var amax float32
		for _, v := range xb {
			amax = max(amax, abs32(v))
		}
		var id float32
		if amax != 0 {
			id = 127 / amax
		}
		ds[b] = F16ToF32(F32ToF16(amax / 127))
		for j, v := range xb {
			q[j] = int8(math.RoundToEven(float64(v * id)))
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
