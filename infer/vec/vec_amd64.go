package vec

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly (vec_amd64.s).
var useAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C

//go:noescape
func dotsF16AVX2(dst *float32, k *uint16, nt, strideBytes int, q *float32, n int)

//go:noescape
func axpysF16AVX2(out *float32, nd int, p *float32, nt int, v *uint16, strideBytes int)

//go:noescape
func maxAVX2(x *float32, n int) float32

//go:noescape
func expSubAVX2(x *float32, n int, m float32) float64

//go:noescape
func scaleAVX2(x *float32, n int, s float32)

//go:noescape
func swiglu8AVX2(gate, up *float32, n int)

//go:noescape
func roundF16AVX2(dst, src *float32, n int)

//go:noescape
func toF16AVX2(dst *uint16, src *float32, n int)

//go:noescape
func addAVX2(dst, src *float32, n int)

//go:noescape
func fromF16AVX2(dst *float32, src *uint16, n int)

// The dispatchers below take checked, non-empty-where-it-matters slices from vec.go.

func dotsF16(dst []float32, q []float32, k []uint16, stride int) {
	if useAVX2 {
		dotsF16AVX2(&dst[0], &k[0], len(dst), 2*stride, &q[0], len(q))
		return
	}
	dotsF16Go(dst, q, k, stride)
}

func axpysF16(out []float32, p []float32, v []uint16, stride int) {
	if useAVX2 {
		axpysF16AVX2(&out[0], len(out), &p[0], len(p), &v[0], 2*stride)
		return
	}
	axpysF16Go(out, p, v, stride)
}

func maxF32(x []float32) float32 {
	if useAVX2 && len(x) > 0 {
		return maxAVX2(&x[0], len(x))
	}
	return maxF32Go(x)
}

func expSub(x []float32, m float32) float64 {
	if useAVX2 && len(x) > 0 {
		return expSubAVX2(&x[0], len(x), m)
	}
	return expSubGo(x, m)
}

func scale(x []float32, s float32) {
	if useAVX2 && len(x) > 0 {
		scaleAVX2(&x[0], len(x), s)
		return
	}
	scaleGo(x, s)
}

func swiglu8(gate, up []float32) {
	if useAVX2 && len(gate) > 0 {
		swiglu8AVX2(&gate[0], &up[0], len(gate))
		return
	}
	swiglu8Go(gate, up)
}

func roundF16(dst, src []float32) {
	if useAVX2 && len(src) > 0 {
		roundF16AVX2(&dst[0], &src[0], len(src))
		return
	}
	roundF16Go(dst, src)
}

func toF16(dst []uint16, src []float32) {
	if useAVX2 && len(src) > 0 {
		toF16AVX2(&dst[0], &src[0], len(src))
		return
	}
	toF16Go(dst, src)
}

func add(dst, src []float32) {
	if useAVX2 && len(src) > 0 {
		addAVX2(&dst[0], &src[0], len(src))
		return
	}
	addGo(dst, src)
}

func fromF16(dst []float32, src []uint16) {
	if useAVX2 && len(src) > 0 {
		fromF16AVX2(&dst[0], &src[0], len(src))
		return
	}
	fromF16Go(dst, src)
}
