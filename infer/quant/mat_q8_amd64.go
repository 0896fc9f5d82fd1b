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

// q4_0MatAVX2 decodes nrows Q4_0 rows (no more than q4PackPairs allows) into its frame once, then
// computes dst[v*ldd+r] for them and the groups*4 consecutive vectors at qs and d, four at a time
// (q0Vec4PackedAVX2 over the packed rows).
//
//go:noescape
func q4_0MatAVX2(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb, groups int)

// q0Vec4PackedAVX2 is q4_0MatAVX2's kernel, declared for the assembler's argument checks.
//
//go:noescape
func q0Vec4PackedAVX2(dst *float32, ldd int, packed *byte, wd *float32, npairs, odd int, qs *int8, d *float32, nb int)

type (
	vec1Kernel func(dst *float32, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)
	vec4Kernel func(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)
	matKernel  func(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb, groups int)
)

func matQ8_0AVX2(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	matQ0AVX2(q8_0Vec1AVX2, q8_0Vec4AVX2, nil, q8_0Bytes, dst, ldd, rows, rowBytes, a)
}

func matQ4_0AVX2(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	matQ0AVX2(q4_0Vec1AVX2, q4_0Vec4AVX2, q4_0MatAVX2, q4_0Bytes, dst, ldd, rows, rowBytes, a)
}

const (
	// q4PackBytes is the room for packed rows in q4_0MatAVX2's frame (65728 bytes in mat_q8_amd64.s).
	q4PackBytes = 65536
	// q4PackChunk is how many bytes of packed rows a chunk aims at: with a group's vectors and
	// block scales, about the 32 KiB of L1 (measured on Zen 3: 12 KiB and 48 KiB are no faster).
	q4PackChunk = 24 << 10
	// q4PackMin is the fewest vectors worth packing for: decoding once pays for itself from two
	// groups of four on (with one, the plain kernel, which decodes as it goes, is faster).
	q4PackMin = 8
)

// q4PackPairs returns how many pairs of rows of nb blocks q4_0MatAVX2 should pack at a time, 0 if
// not even one fits: per pair, 64 bytes a block and 64 bytes of float scales per eight blocks.
func q4PackPairs(nb int) int {
	pair := 64*nb + 64*((nb+7)/8)
	if pair > q4PackBytes {
		return 0
	}
	return min(q4PackBytes/pair, max(1, q4PackChunk/pair))
}

// chunkBytes bounds the weights that the passes over the vectors (one per four vectors, one per
// leftover vector) cover in turn, so that the passes after the first read them from L2.
const chunkBytes = 128 << 10

// matQ0AVX2 runs the kernels over the vectors four at a time and then one at a time, over chunks of
// rows when that takes several passes. The kernels split their rows into two or four sequential
// streams, so a single pass is left whole: a long stream is what the prefetchers serve best. With
// a mat kernel (Q4_0) and enough vectors, each chunk is packed once by mat for all groups of four
// and the leftover vectors run over the same chunk while it is in cache.
func matQ0AVX2(vec1 vec1Kernel, vec4 vec4Kernel, mat matKernel, blockBytes int, dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	if rowBytes == 0 || len(rows) == 0 || a.count == 0 {
		return
	}
	nb, nrows := a.n/qk0, len(rows)/rowBytes
	// The assembly trusts these; checking them turns a wiring mistake into a panic, not a wild access.
	if rowBytes != nb*blockBytes || len(rows) != nrows*rowBytes || len(a.qs) < a.count*a.n || len(a.d) < a.count*nb {
		panic("quant: Q8_0/Q4_0 kernel called with inconsistent shapes")
	}
	_ = dst[(a.count-1)*ldd+nrows-1]
	if pairs := q4PackPairs(nb); mat != nil && a.count >= q4PackMin && pairs > 0 {
		groups := a.count / 4
		for r0 := 0; r0 < nrows; r0 += 2 * pairs {
			nr := min(2*pairs, nrows-r0)
			w := &rows[r0*rowBytes]
			mat(&dst[r0], ldd, w, rowBytes, nr, &a.qs[0], &a.d[0], nb, groups)
			for v := 4 * groups; v < a.count; v++ {
				vec1(&dst[v*ldd+r0], w, rowBytes, nr, &a.qs[v*a.n], &a.d[v*nb], nb)
			}
		}
		return
	}
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
