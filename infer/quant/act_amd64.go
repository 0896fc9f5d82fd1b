package quant

import "golang.org/x/sys/cpu"

// The AVX2 (+F16C) activation conversions (act_amd64.s). Each gives the same bits as its Go
// version in activation.go for every input: the quantisers convert a block that holds an Inf or a
// NaN, or whose scale overflows float32 (largest magnitude below about 3.7e-37), with the Go code
// itself, so such blocks get exactly the Go version's result (see TestActAVX2MatchesGo).
//
// What that result is (the Go code's, on amd64): Q8_0 gives a block with a NaN the scale NaN and
// quants 0, one with an Inf the scale +Inf and quants 0, and one whose 127/amax overflows the scale
// 0 and quants 0. Q8_K skips NaNs in its search for the largest magnitude (strict >), so a NaN
// element quantises to what nearestInt makes of its payload (0 for the default NaN) in an otherwise
// ordinary block; an Inf gives the scale the opposite infinity (1/(-127/mx)) and quants 0; an
// overflowing -127/max gives -128 for every nonzero element (nearestInt(+-Inf) clamped) and 0 for
// zeros. The F16 and BF16 round trips need no fallback: F16C's conversions keep NaNs NaN with
// their sign and top payload bits exactly as F32ToF16 and f16Table do, and the BF16 kernel forces
// the quiet bit as F32ToBF16 does.
func init() {
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C {
		actKernels.roundF16 = roundRowsF16AVX2
		actKernels.roundBF16 = roundRowsBF16AVX2
		actKernels.q8_0 = quantizeActQ8_0AVX2
		actKernels.q8K = quantizeActQ8KAVX2
	}
}

// actQ8_0AVX2 and actQ8KAVX2 convert up to nb blocks and return how many they did: they stop
// before the first block that needs the Go code.

//go:noescape
func actQ8_0AVX2(qs *int8, ds *float32, x *float32, nb int) (done int)

//go:noescape
func actQ8KAVX2(qs *int8, ds *float32, bsums *int16, x *float32, nb int) (done int)

//go:noescape
func actRoundF16AVX2(dst, src *float32, n int)

//go:noescape
func actRoundBF16AVX2(dst, src *float32, n int)

func roundRowsF16AVX2(dst, src []float32) {
	if len(src) == 0 {
		return
	}
	_ = dst[len(src)-1] // the assembly trusts the lengths
	actRoundF16AVX2(&dst[0], &src[0], len(src))
}

func roundRowsBF16AVX2(dst, src []float32) {
	if len(src) == 0 {
		return
	}
	_ = dst[len(src)-1]
	actRoundBF16AVX2(&dst[0], &src[0], len(src))
}

func quantizeActQ8_0AVX2(qs []int8, ds []float32, x []float32) {
	nb := len(ds)
	if nb == 0 {
		return
	}
	_, _ = qs[nb*qk0-1], x[nb*qk0-1]
	for b := 0; b < nb; b++ {
		b += actQ8_0AVX2(&qs[b*qk0], &ds[b], &x[b*qk0], nb-b)
		if b < nb {
			quantizeActQ8_0(qs[b*qk0:b*qk0+qk0], ds[b:b+1], x[b*qk0:b*qk0+qk0])
		}
	}
}

func quantizeActQ8KAVX2(qs []int8, ds []float32, bsums []int16, x []float32) {
	nb := len(ds)
	if nb == 0 {
		return
	}
	_, _, _ = qs[nb*qkK-1], bsums[nb*16-1], x[nb*qkK-1]
	for b := 0; b < nb; b++ {
		b += actQ8KAVX2(&qs[b*qkK], &ds[b], &bsums[b*16], &x[b*qkK], nb-b)
		if b < nb {
			quantizeActQ8K(qs[b*qkK:b*qkK+qkK], ds[b:b+1], bsums[b*16:b*16+16], x[b*qkK:b*qkK+qkK])
		}
	}
}
