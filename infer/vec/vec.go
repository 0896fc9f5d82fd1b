// Package vec holds the engine's vector operations: attention over an F16 KV cache (DotsF16,
// AxpysF16), softmax, SwiGLU and F16 rounding. Each follows the operation order of ggml's CPU
// backend (AVX2 build), so results track llama.cpp's: the dot products are ggml_vec_dot_f16's, the
// exponentials ggml_v_expf's.
//
// On amd64 with AVX2, FMA and F16C the work runs in assembly (VEX-encoded only, each routine ending
// with VZEROUPPER); elsewhere, and as the tests' oracle, plain Go versions run the same operations in
// the same order, and both give the same bits. The one step that is not ggml's to the bit is the C
// library's expf in the scalar tails of Softmax and SwiGLU (len%8 elements), done in both paths as
// math.Exp rounded to float32: correctly rounded but for rare double-rounding cases, where glibc's
// expf is within 0.502 ulp. Nothing allocates.
package vec

import "fmt"

// DotsF16 sets dst[t] = dot(q, k[t*stride : t*stride+len(q)]) for every t < len(dst): one
// attention score per cached key, the keys F16 and converted exactly. q holds values already
// rounded to F16 (see RoundF16), as ggml converts Q to F16 for the Q·K product. Each score is
// ggml_vec_dot_f16(len(q), key, q) as the AVX2 build computes it: four 8-lane accumulators of
// fused multiply-adds over steps of 32 elements, GGML_F32_VEC_REDUCE, then the len(q)%32 leftovers
// added one at a time in float64. It panics if a key lies outside k.
func DotsF16(dst []float32, q []float32, k []uint16, stride int) {
	if len(dst) == 0 {
		return
	}
	if len(q) == 0 {
		clear(dst)
		return
	}
	if stride < 0 || (len(dst)-1)*stride+len(q) > len(k) {
		panic(fmt.Sprintf("vec: DotsF16: %d keys of %d at stride %d in %d halves", len(dst), len(q), stride, len(k)))
	}
	dotsF16(dst, q, k, stride)
}

// AxpysF16 adds to out the sum over t < len(p) of p[t] times the F16 row v[t*stride :
// t*stride+len(out)]: out[d] = fma(p[t], v[t*stride+d], out[d]) for t in increasing order, one
// fused multiply-add per (t, d). This is the attention's weighted sum of F16 values. out
// accumulates: splitting a range of t over several calls, in order, on the same out gives the bits
// of one call (starting each part from a fresh out and adding the parts does not). It panics if a
// row lies outside v.
func AxpysF16(out []float32, p []float32, v []uint16, stride int) {
	if len(out) == 0 || len(p) == 0 {
		return
	}
	if stride < 0 || (len(p)-1)*stride+len(out) > len(v) {
		panic(fmt.Sprintf("vec: AxpysF16: %d rows of %d at stride %d in %d halves", len(p), len(out), stride, len(v)))
	}
	axpysF16(out, p, v, stride)
}

// Softmax replaces x by its softmax, as ggml's soft_max does for one row: the maximum m, then
// x[i] = exp(x[i]-m) summed in float64 (ggml_float), then every value scaled by float32(1/sum). The
// exponentials are ggml_v_expf for each whole group of 8 (whose float32 sum, reduced as ggml's AVX2
// loop does, is what enters the float64 sum) and expf for the len(x)%8 left over. Results for NaN
// inputs are unspecified.
func Softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	m := maxF32(x)
	n8 := len(x) &^ 7
	sum := expSub(x[:n8], m)
	for i := n8; i < len(x); i++ {
		e := expf(x[i] - m)
		sum += float64(e)
		x[i] = e
	}
	scale(x, float32(1/sum))
}

// SwiGLU sets gate[i] = silu(gate[i]) * up[i] with silu(x) = x/(1+exp(-x)), as ggml_vec_swiglu_f32:
// ggml_v_silu (ggml_v_expf of 0-x) for each whole group of 8, and x/(1+expf(-x)) for the rest. It
// panics if up is shorter than gate.
func SwiGLU(gate, up []float32) {
	if len(up) < len(gate) {
		panic(fmt.Sprintf("vec: SwiGLU: %d gates, %d ups", len(gate), len(up)))
	}
	n8 := len(gate) &^ 7
	swiglu8(gate[:n8], up[:n8])
	for i := n8; i < len(gate); i++ {
		x := gate[i]
		gate[i] = x / (1 + expf(-x)) * up[i]
	}
}

// RoundF16 sets dst[i] to src[i] rounded to the nearest F16 (ties to even) and back, as ggml's
// FP32->FP16->FP32 with F16C: overflow gives infinity, NaN stays NaN (quiet). dst and src may be the
// same slice. It panics if dst is shorter than src.
func RoundF16(dst, src []float32) {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("vec: RoundF16: %d values into %d", len(src), len(dst)))
	}
	roundF16(dst[:len(src)], src)
}

// ToF16 sets dst[i] to the F16 bits of src[i], rounded to nearest even (VCVTPS2PH with immediate 0):
// storing K and V into the cache. It panics if dst is shorter than src.
func ToF16(dst []uint16, src []float32) {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("vec: ToF16: %d values into %d", len(src), len(dst)))
	}
	toF16(dst[:len(src)], src)
}

// FromF16 sets dst[i] to the value of the F16 src[i], exactly (VCVTPH2PS: a NaN stays NaN with its
// payload, made quiet). It panics if dst is shorter than src.
func FromF16(dst []float32, src []uint16) {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("vec: FromF16: %d values into %d", len(src), len(dst)))
	}
	fromF16(dst[:len(src)], src)
}

// Add sets dst[i] += src[i] for i < len(src) (the residual connection). It panics if dst is shorter
// than src.
func Add(dst, src []float32) {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("vec: Add: %d values into %d", len(src), len(dst)))
	}
	add(dst[:len(src)], src)
}

// Scale sets x[i] *= s (ggml_vec_scale_f32: the attention's 1/sqrt(head dim), softmax's 1/sum).
func Scale(x []float32, s float32) {
	scale(x, s)
}
