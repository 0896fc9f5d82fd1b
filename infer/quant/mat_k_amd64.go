package quant

import "golang.org/x/sys/cpu"

// The AVX2 kernels for Q4_K and Q6_K weights (mat_k_amd64.s), ggml's AVX2 dot products operation
// for operation. They convert the weights' fp16 scales with F16C, whose conversion is exact like
// F16ToF32's.
func init() {
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C {
		matKernels[Q4_K] = matQ4KAVX2
		matKernels[Q6_K] = matQ6KAVX2
	}
}

// The Vec2 kernels write dst[r] for nrows rows of nb blocks against the one vector at qs, d
// (and bsums); the Tile kernels write dst[v*ldd+r] for the count vectors stored one after another
// from qs, d (and bsums).

//go:noescape
func q4KVec2AVX2(dst *float32, rows *byte, rowBytes, nrows, nb int, qs *int8, d *float32, bsums *int16)

//go:noescape
func q4KTileAVX2(dst *float32, ldd int, rows *byte, nrows, nb int, qs *int8, d *float32, bsums *int16, count int)

//go:noescape
func q6KVec2AVX2(dst *float32, rows *byte, rowBytes, nrows, nb int, qs *int8, d *float32)

//go:noescape
func q6KTileAVX2(dst *float32, ldd int, rows *byte, nrows, nb int, qs *int8, d *float32, count int)

// kTileBytes bounds the weights one Tile call covers: the kernel passes over them once per group of
// eight vectors, so the passes after the first read them from L2 rather than memory.
const kTileBytes = 128 << 10

func matQ4KAVX2(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	nrows, nb := checkKShapes(q4KBytes, dst, ldd, rows, rowBytes, a)
	if nrows == 0 {
		return
	}
	if a.count == 1 {
		q4KVec2AVX2(&dst[0], &rows[0], rowBytes, nrows, nb, &a.qs[0], &a.d[0], &a.bsums[0])
		return
	}
	chunk := max(1, kTileBytes/rowBytes)
	for r0 := 0; r0 < nrows; r0 += chunk {
		q4KTileAVX2(&dst[r0], ldd, &rows[r0*rowBytes], min(chunk, nrows-r0), nb, &a.qs[0], &a.d[0], &a.bsums[0], a.count)
	}
}

func matQ6KAVX2(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	nrows, nb := checkKShapes(q6KBytes, dst, ldd, rows, rowBytes, a)
	if nrows == 0 {
		return
	}
	if a.count == 1 {
		q6KVec2AVX2(&dst[0], &rows[0], rowBytes, nrows, nb, &a.qs[0], &a.d[0])
		return
	}
	chunk := max(1, kTileBytes/rowBytes)
	for r0 := 0; r0 < nrows; r0 += chunk {
		q6KTileAVX2(&dst[r0], ldd, &rows[r0*rowBytes], min(chunk, nrows-r0), nb, &a.qs[0], &a.d[0], a.count)
	}
}

// checkKShapes returns the rows and blocks per row of a K-quant product, panicking unless the
// buffers hold what the assembly will read and write: it trusts them, so a wiring mistake must be a
// panic rather than a wild access.
func checkKShapes(blockBytes int, dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) (nrows, nb int) {
	nb = a.n / qkK
	if a.count == 0 || len(rows) == 0 {
		return 0, nb
	}
	nrows = len(rows) / rowBytes
	if rowBytes != nb*blockBytes || len(rows) != nrows*rowBytes || len(a.qs) < a.count*a.n ||
		len(a.d) < a.count*nb || len(a.bsums) < a.count*nb*16 {
		panic("quant: K-quant kernel called with inconsistent shapes")
	}
	_ = dst[(a.count-1)*ldd+nrows-1]
	return nrows, nb
}
