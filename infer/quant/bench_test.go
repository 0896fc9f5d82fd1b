package quant

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// benchMatrix builds a rows x cols matrix of typ by quantising 16 Gaussian rows and tiling them:
// quantising 16M values with the reference K-quantisers would dominate the benchmark's setup.
func benchMatrix(b *testing.B, typ Type, rows, cols int) Matrix {
	b.Helper()
	r := rand.New(rand.NewPCG(15, 16))
	const distinct = 16
	rb, err := RowBytes(typ, cols)
	if err != nil {
		b.Fatal(err)
	}
	tile := make([]byte, distinct*rb)
	if err := Quantize(typ, tile, gaussian(r, distinct*cols, 0.02)); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, rows*rb)
	for i := 0; i < len(data); i += len(tile) {
		copy(data[i:], tile)
	}
	w, err := NewMatrix(typ, rows, cols, data)
	if err != nil {
		b.Fatal(err)
	}
	return w
}

// BenchmarkMatVecRows runs one 4096x4096 matrix-vector product per op on one goroutine; the
// throughput is bytes of weights streamed per second, the number memory bandwidth caps.
func BenchmarkMatVecRows(b *testing.B) {
	const n = 4096
	for _, typ := range weightTypes {
		b.Run(typ.String(), func(b *testing.B) {
			w := benchMatrix(b, typ, n, n)
			var a Activation
			if err := a.Prepare(typ, gaussian(rand.New(rand.NewPCG(17, 18)), n, 1)); err != nil {
				b.Fatal(err)
			}
			dst := make([]float32, n)
			b.SetBytes(int64(len(w.Data)))
			b.ReportAllocs()
			for b.Loop() {
				MatVecRows(dst, w, &a, 0, n)
			}
		})
	}
}

// BenchmarkPrepare measures quantising a 4096-element activation, paid once per product.
func BenchmarkPrepare(b *testing.B) {
	x := gaussian(rand.New(rand.NewPCG(19, 20)), 4096, 1)
	for _, typ := range []Type{F32, Q8_0, Q4_K} {
		format, _ := vecDotType(typ)
		b.Run(format.String(), func(b *testing.B) {
			var a Activation
			b.SetBytes(int64(4 * len(x)))
			b.ReportAllocs()
			for b.Loop() {
				if err := a.Prepare(typ, x); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkMatMul runs one product of a 2048x768 matrix (the FFN shape of a 134M llama) with a
// batch of vectors per op, on one goroutine. Batch 1 is decode (bytes of weights per second);
// batch 64 is a prompt chunk, where the figure that matters is multiply-adds per second, reported
// as GMAC/s.
func BenchmarkMatMul(b *testing.B) {
	const rows, cols = 2048, 768
	for _, typ := range weightTypes {
		for _, count := range []int{1, 4, 64} {
			b.Run(typ.String()+"/batch"+strconv.Itoa(count), func(b *testing.B) {
				w := benchMatrix(b, typ, rows, cols)
				a, _ := prepareVectors(b, rand.New(rand.NewPCG(27, 28)), typ, count, cols)
				dst := make([]float32, count*rows)
				b.SetBytes(int64(len(w.Data)))
				b.ReportAllocs()
				for b.Loop() {
					MatMulRows(dst, w, a, 0, rows)
				}
				b.ReportMetric(float64(rows*cols*count)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GMAC/s")
			})
		}
	}
}
