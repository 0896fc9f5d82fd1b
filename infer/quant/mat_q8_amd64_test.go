package quant

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

// ggmlAVX2Dot is ggml's AVX2 ggml_vec_dot_q8_0_q8_0 / ggml_vec_dot_q4_0_q8_0 written out lane by
// lane: per block, lane l holds the integer dot of elements 4l..4l+3, converted to float and added
// with one FMA scaled by fp16(w.d)*y.d into lane l of one accumulator; then hsum_float_8.
func ggmlAVX2Dot(typ Type, row []byte, x vec) float32 {
	bb := typ.BlockBytes()
	var acc [8]float32
	for b, dy := range x.d {
		blk := row[b*bb : (b+1)*bb]
		d := F16ToF32(binary.LittleEndian.Uint16(blk)) * dy
		for l := range acc {
			var s int32
			for j := 4 * l; j < 4*l+4; j++ {
				var w int32
				if typ == Q8_0 {
					w = int32(int8(blk[2+j]))
				} else {
					w = int32(blk[2+j%16]>>(4*(j/16))&0xf) - 8
				}
				s += w * int32(x.qs[b*qk0+j])
			}
			acc[l] = float32(math.FMA(float64(d), float64(s), float64(acc[l])))
		}
	}
	var h [4]float32
	for l := range h {
		h[l] = acc[l+4] + acc[l]
	}
	return (h[0] + h[2]) + (h[1] + h[3])
}

// checkAVX2 holds the installed kernel to ggml's summation order bit for bit on one matrix of
// maxRows rows of nb blocks and maxCount vectors: for every row count in rows and vector count in
// counts, the product of a leading part of each over a random range of rows, checking that nothing
// outside the range is written.
func checkAVX2(t *testing.T, r *rand.Rand, typ Type, nb, maxRows int, rows, counts []int) {
	t.Helper()
	cols := nb * qk0
	w, err := NewMatrix(typ, maxRows, cols, randomRows(r, typ, maxRows, cols))
	if err != nil {
		t.Fatal(err)
	}
	maxCount := 0
	for _, c := range counts {
		maxCount = max(maxCount, c)
	}
	a, _ := prepareVectors(t, r, typ, maxCount, cols)
	rb := w.rowBytes()
	want := make([]float32, maxCount*maxRows)
	for v := range maxCount {
		for row := range maxRows {
			want[v*maxRows+row] = ggmlAVX2Dot(typ, w.Data[row*rb:(row+1)*rb], a.vector(v))
		}
	}
	for _, nr := range rows {
		wr, err := NewMatrix(typ, nr, cols, w.Data[:nr*rb])
		if err != nil {
			t.Fatal(err)
		}
		for _, count := range counts {
			ar := &Activation{format: a.format, n: a.n, count: count, qs: a.qs[:count*a.n], d: a.d[:count*nb]}
			start := r.IntN(nr)
			end := start + 1 + r.IntN(nr-start)
			dst := make([]float32, count*nr)
			for i := range dst {
				dst[i] = 42
			}
			MatMulRows(dst, wr, ar, start, end)
			for v := range count {
				for row := range nr {
					got, exp := dst[v*nr+row], float32(42)
					if row >= start && row < end {
						exp = want[v*maxRows+row]
					}
					if math.Float32bits(got) != math.Float32bits(exp) {
						t.Fatalf("%s %d blocks, rows [%d, %d) of %d, vector %d of %d, row %d: got %g, want %g",
							typ, nb, start, end, nr, v, count, row, got, exp)
					}
				}
			}
		}
	}
}

// TestAVX2MatchesGGML holds the AVX2 kernels to ggml's summation order bit for bit on every path:
// one vector (decode) and groups of four, Q4_0's packed chunks for eight vectors or more with the
// leftovers after them, rows and vectors in and out of whole tiles (odd rows, an odd last pair),
// full and partial groups of eight blocks, and row ranges that neither start at 0 nor reach the end.
func TestAVX2MatchesGGML(t *testing.T) {
	if matKernels[Q8_0] == nil {
		t.Skip("no AVX2 kernels on this CPU")
	}
	r := rand.New(rand.NewPCG(31, 32))
	var rows, counts []int
	for i := 1; i <= 13; i++ {
		rows = append(rows, i)
	}
	for i := 1; i <= 17; i++ {
		counts = append(counts, i)
	}
	counts = append(counts, 64)
	for _, typ := range []Type{Q8_0, Q4_0} {
		for _, nb := range []int{1, 2, 7, 8, 9, 15, 16, 17, 24, 33} {
			checkAVX2(t, r, typ, nb, 13, rows, counts)
		}
	}
}

// TestAVX2PackedChunks covers what TestAVX2MatchesGGML's small matrices do not reach: several packed
// Q4_0 chunks, one pair of rows a chunk, and rows too long to pack, which take the plain kernels.
func TestAVX2PackedChunks(t *testing.T) {
	if matKernels[Q4_0] == nil {
		t.Skip("no AVX2 kernels on this CPU")
	}
	if 2*q4PackPairs(24) >= 61 || q4PackPairs(341) != 1 || q4PackPairs(900) != 1 || q4PackPairs(911) != 0 {
		t.Fatalf("chunk sizes moved (%d, %d, %d, %d pairs): pick shapes that still cover several chunks, one pair and none",
			q4PackPairs(24), q4PackPairs(341), q4PackPairs(900), q4PackPairs(911))
	}
	r := rand.New(rand.NewPCG(33, 34))
	for _, typ := range []Type{Q4_0, Q8_0} {
		checkAVX2(t, r, typ, 24, 61, []int{29, 57, 61}, []int{8, 9, 12, 15, 64})
		for _, nb := range []int{341, 900, 911} {
			checkAVX2(t, r, typ, nb, 5, []int{1, 2, 5}, []int{8, 9})
		}
	}
}

// TestAVX2PackedNoAllocation: the packed Q4_0 path keeps its chunk in the kernel's frame.
func TestAVX2PackedNoAllocation(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	w, _ := NewMatrix(Q4_0, 8, 512, randomRows(r, Q4_0, 8, 512))
	a, _ := prepareVectors(t, r, Q4_0, 9, 512)
	dst := make([]float32, 9*8)
	if allocs := testing.AllocsPerRun(20, func() { MatMulRows(dst, w, a, 0, 8) }); allocs != 0 {
		t.Errorf("%g allocations per MatMulRows", allocs)
	}
}

// BenchmarkMatQ0 compares the AVX2 kernels with the Go ones in one run: decode (one vector) at the
// 134M FFN shape and at 4096x4096 in bytes of weights per second, and a 64-vector prompt chunk in
// GMAC/s.
func BenchmarkMatQ0(b *testing.B) {
	shapes := []struct{ rows, cols, count int }{{2048, 768, 1}, {4096, 4096, 1}, {2048, 768, 64}}
	for _, typ := range []Type{Q8_0, Q4_0} {
		installed := matKernels[typ]
		for _, kernel := range []string{"go", "avx2"} {
			for _, s := range shapes {
				name := typ.String() + "/" + kernel + "/" + strconv.Itoa(s.rows) + "x" + strconv.Itoa(s.cols) +
					"/batch" + strconv.Itoa(s.count)
				b.Run(name, func(b *testing.B) {
					if kernel == "avx2" && installed == nil {
						b.Skip("no AVX2 kernels on this CPU")
					}
					if kernel == "go" {
						matKernels[typ] = nil
						defer func() { matKernels[typ] = installed }()
					}
					w := benchMatrix(b, typ, s.rows, s.cols)
					a, _ := prepareVectors(b, rand.New(rand.NewPCG(33, 34)), typ, s.count, s.cols)
					dst := make([]float32, s.count*s.rows)
					b.SetBytes(int64(len(w.Data)))
					for b.Loop() {
						MatMulRows(dst, w, a, 0, s.rows)
					}
					b.ReportMetric(float64(s.rows*s.cols*s.count)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
				})
			}
		}
	}
}
