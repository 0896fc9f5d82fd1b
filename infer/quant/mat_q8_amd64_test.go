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

// TestAVX2MatchesGGML holds the AVX2 kernels to ggml's summation order bit for bit, on every tile
// path (rows and vectors in and out of whole tiles, full and partial groups of eight blocks, row
// ranges that do not start at 0) and checks that nothing outside the range is written.
func TestAVX2MatchesGGML(t *testing.T) {
	if matKernels[Q8_0] == nil {
		t.Skip("no AVX2 kernels on this CPU")
	}
	r := rand.New(rand.NewPCG(31, 32))
	for _, typ := range []Type{Q8_0, Q4_0} {
		for _, nb := range []int{1, 2, 7, 8, 9, 15, 16, 17, 24, 33} {
			cols := nb * qk0
			for _, rows := range []int{1, 2, 3, 4, 5, 6, 7, 9} {
				w, err := NewMatrix(typ, rows, cols, randomRows(r, typ, rows, cols))
				if err != nil {
					t.Fatal(err)
				}
				for _, count := range []int{1, 2, 3, 4, 5, 6, 8, 9} {
					a, _ := prepareVectors(t, r, typ, count, cols)
					start := r.IntN(rows)
					dst := make([]float32, count*rows)
					for i := range dst {
						dst[i] = 42
					}
					MatMulRows(dst, w, a, start, rows)
					rb := w.rowBytes()
					for v := range count {
						for row := range rows {
							got := dst[v*rows+row]
							want := float32(42)
							if row >= start {
								want = ggmlAVX2Dot(typ, w.Data[row*rb:(row+1)*rb], a.vector(v))
							}
							if math.Float32bits(got) != math.Float32bits(want) {
								t.Fatalf("%s %d blocks, rows [%d, %d), vector %d of %d, row %d: got %g, want %g",
									typ, nb, start, rows, v, count, row, got, want)
							}
						}
					}
				}
			}
		}
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
