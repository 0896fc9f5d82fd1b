package quant

import "golang.org/x/sys/cpu"

// The AVX2 kernels for Q8_0 and Q4_0 weights (mat_q8_amd64.s). They convert the weights' fp16
// scales with F16C, whose conversion is exact like F16ToF32's.
func init() {
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C {
		matKernels[Q8_0] = matQ8_0AVX2
		matKernels[Q4_0] = matQ4_0AVX2
	}
}

// The assembly kernels compute dst[v*ldd+r] for nrows rows of nb blocks and one vector (Vec1, which
// writes dst[r]) or the four consecutive vectors at qs and d (Vec4).

//go:noescape
func q8_0Vec1AVX2(dst *float32, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)

//go:noescape
func q8_0Vec4AVX2(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)

//go:noescape
func q4_0Vec1AVX2(dst *float32, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)

//go:noescape
func q4_0Vec4AVX2(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)

type (
	vec1Kernel func(dst *float32, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)
	vec4Kernel func(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)
)

func matQ8_0AVX2(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	matQ0AVX2(q8_0Vec1AVX2, q8_0Vec4AVX2, q8_0Bytes, dst, ldd, rows, rowBytes, a)
}

func matQ4_0AVX2(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	matQ0AVX2(q4_0Vec1AVX2, q4_0Vec4AVX2, q4_0Bytes, dst, ldd, rows, rowBytes, a)
}

// chunkBytes bounds the weights that the passes over the vectors (one per four vectors, one per
// leftover vector) cover in turn, so that the passes after the first read them from L2.
const chunkBytes = 128 << 10

// matQ0AVX2 runs the kernels over the vectors four at a time and then one at a time, over chunks of
// rows when that takes several passes. The kernels split their rows into two or four sequential
// streams, so a single pass is left whole: a long stream is what the prefetchers serve best.
func matQ0AVX2(vec1 vec1Kernel, vec4 vec4Kernel, blockBytes int, dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	if rowBytes == 0 || len(rows) == 0 || a.count == 0 {
		return
	}
	nb, nrows := a.n/qk0, len(rows)/rowBytes
	// The assembly trusts these; checking them turns a wiring mistake into a panic, not a wild access.
	if rowBytes != nb*blockBytes || len(rows) != nrows*rowBytes || len(a.qs) < a.count*a.n || len(a.d) < a.count*nb {
		panic("quant: Q8_0/Q4_0 kernel called with inconsistent shapes")
	}
	_ = dst[(a.count-1)*ldd+nrows-1]
	chunk := nrows
	if a.count/4+a.count%4 > 1 { // more than one pass over the weights
		chunk = max(4, chunkBytes/rowBytes&^3)
	}
	for r0 := 0; r0 < nrows; r0 += chunk {
		nr := min(chunk, nrows-r0)
		w := &rows[r0*rowBytes]
		v := 0
		for ; v+4 <= a.count; v += 4 {
			vec4(&dst[v*ldd+r0], ldd, w, rowBytes, nr, &a.qs[v*a.n], &a.d[v*nb], nb)
		}
		for ; v < a.count; v++ {
			vec1(&dst[v*ldd+r0], w, rowBytes, nr, &a.qs[v*a.n], &a.d[v*nb], nb)
		}
	}
}
