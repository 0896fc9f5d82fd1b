package quant

import (
	"fmt"

	"golang.org/x/sys/cpu"
)

// AVX2 kernels for float weights (mat_float_amd64.s). Each (row, vector) result is ggml's AVX2
// ggml_vec_dot_f32 / ggml_vec_dot_f16 / ggml_vec_dot_bf16 of that row and vector, computed with the
// same operations in the same order whichever kernel and tile computes it, so the results are batch
// invariant: four 8-lane accumulators over steps of 32 elements (fused multiply-adds for F32 and F16,
// a multiply then an add for BF16, as ggml's BF16 loop is written), ggml's reduction, then the n%32
// leftovers one at a time (in float32 for F32, in float64 for F16 and BF16).
//
// The activation (a.f32) already holds values rounded to F16 or BF16 for those weights, so the
// float32 products are the products of ggml's converted operands.

//go:noescape
func matvecF32AVX2(dst *float32, rows *byte, nrows, rowBytes int, x *float32, n int)

//go:noescape
func matvecF16AVX2(dst *float32, rows *byte, nrows, rowBytes int, x *float32, n int)

//go:noescape
func matvecBF16AVX2(dst *float32, rows *byte, nrows, rowBytes int, x *float32, n int)

//go:noescape
func mat3F32AVX2(dst *float32, ldd int, rows *byte, nrows, rowBytes int, x *float32, n int)

//go:noescape
func mat3F16AVX2(dst *float32, ldd int, rows *byte, nrows, rowBytes int, x *float32, n int)

//go:noescape
func mat3BF16AVX2(dst *float32, ldd int, rows *byte, nrows, rowBytes int, x *float32, n int)

type floatKernels struct {
	elem   int // bytes per weight
	matvec func(dst *float32, rows *byte, nrows, rowBytes int, x *float32, n int)
	mat3   func(dst *float32, ldd int, rows *byte, nrows, rowBytes int, x *float32, n int)
}

var (
	f32AVX2  = floatKernels{4, matvecF32AVX2, mat3F32AVX2}
	f16AVX2  = floatKernels{2, matvecF16AVX2, mat3F16AVX2}
	bf16AVX2 = floatKernels{2, matvecBF16AVX2, mat3BF16AVX2}
)

// init installs the kernels in both tables, so a single dot product (dotKernels) has the bits of the
// same row and vector in a matrix product (matKernels).
func init() {
	if !cpu.X86.HasAVX2 || !cpu.X86.HasFMA {
		return
	}
	matKernels[F32] = func(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
		f32AVX2.mat(dst, ldd, rows, rowBytes, a)
	}
	dotKernels[F32] = dotF32AVX2
	matKernels[BF16] = func(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
		bf16AVX2.mat(dst, ldd, rows, rowBytes, a)
	}
	dotKernels[BF16] = dotBF16AVX2
	if cpu.X86.HasF16C {
		matKernels[F16] = func(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
			f16AVX2.mat(dst, ldd, rows, rowBytes, a)
		}
		dotKernels[F16] = dotF16AVX2
	}
}

// dotF32AVX2, dotF16AVX2 and dotBF16AVX2 are the single-vector kernels as dotFuncs. They call the
// assembly directly: through a func value the result variable would escape to the heap.
func dotF32AVX2(row []byte, x vec) float32 {
	var out float32
	checkDot(row, x, 4)
	matvecF32AVX2(&out, &row[0], 1, len(row), &x.f32[0], len(x.f32))
	return out
}

func dotF16AVX2(row []byte, x vec) float32 {
	var out float32
	checkDot(row, x, 2)
	matvecF16AVX2(&out, &row[0], 1, len(row), &x.f32[0], len(x.f32))
	return out
}

func dotBF16AVX2(row []byte, x vec) float32 {
	var out float32
	checkDot(row, x, 2)
	matvecBF16AVX2(&out, &row[0], 1, len(row), &x.f32[0], len(x.f32))
	return out
}

func checkDot(row []byte, x vec, elem int) {
	if len(x.f32) == 0 || len(row) != len(x.f32)*elem {
		panic(fmt.Sprintf("quant: float kernel: row of %d bytes for %d elements", len(row), len(x.f32)))
	}
}

// floatRowBlock is the bytes of weight rows that one pass of vector triples runs over: the block
// stays in L2 (512 KiB a core on the machines measured) while each triple of vectors, in L1, meets
// every row of it.
const floatRowBlock = 192 << 10

// mat is the matFunc of the kernels k. A single vector streams the rows three at a time; a batch
// takes the rows in blocks that stay in cache and each block three vectors at a time, the leftover
// one or two vectors going through the single-vector kernel (same operations, same bits).
func (k floatKernels) mat(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	n, count := a.n, a.count
	if rowBytes != n*k.elem || len(rows)%rowBytes != 0 || len(a.f32) < count*n {
		panic(fmt.Sprintf("quant: float kernel: rows of %d bytes for %d elements, %d vectors in %d values",
			rowBytes, n, count, len(a.f32)))
	}
	nrows := len(rows) / rowBytes
	if nrows == 0 || count == 0 {
		return
	}
	_ = dst[(count-1)*ldd+nrows-1]
	x := a.f32
	if count == 1 {
		k.matvec(&dst[0], &rows[0], nrows, rowBytes, &x[0], n)
		return
	}
	block := max(1, floatRowBlock/rowBytes)
	for r0 := 0; r0 < nrows; r0 += block {
		nr := min(block, nrows-r0)
		w := &rows[r0*rowBytes]
		v := 0
		for ; v+3 <= count; v += 3 {
			k.mat3(&dst[v*ldd+r0], ldd, w, nr, rowBytes, &x[v*n], n)
		}
		for ; v < count; v++ {
			k.matvec(&dst[v*ldd+r0], w, nr, rowBytes, &x[v*n], n)
		}
	}
}
