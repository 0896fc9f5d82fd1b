package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// matShapes are row lengths (multiples of 256, so every type can take them, plus odd block counts
// for the 32-element types) and row counts that leave remainders for kernels that take rows or
// vectors several at a time.
var (
	matCols  = []int{256, 768, 2048}
	matCols0 = []int{32, 96, 160, 544} // Q8_0 and Q4_0 only: 1, 3, 5 and 17 blocks
	matRows  = []int{1, 3, 8, 13}
	matCount = []int{1, 2, 3, 4, 5, 7, 8, 9, 17, 64}
)

// matColsFloat are row lengths only the float types take: any length, with
// leftovers after whole SIMD steps (172 is stories260K's FFN width).
var matColsFloat = []int{1, 7, 33, 64, 172}

func colsFor(typ Type) []int {
	switch typ {
	case Q8_0, Q4_0:
		return append(append([]int{}, matCols...), matCols0...)
	case F32, F16, BF16:
		return append(append([]int{}, matCols...), matColsFloat...)
	}
	return matCols
}

// prepareVectors prepares count Gaussian vectors of n elements, with an outlier in some so that
// block scales differ.
func prepareVectors(t testing.TB, r *rand.Rand, typ Type, count, n int) (*Activation, []float32) {
	t.Helper()
	x := gaussian(r, count*n, 1)
	for v := 0; v < count; v += 3 {
		x[v*n+r.IntN(n)] = float32(r.NormFloat64() * 8)
	}
	var a Activation
	if err := a.PrepareBatch(typ, x, n); err != nil {
		t.Fatal(err)
	}
	return &a, x
}

// singleVector prepares vector v of x alone.
func singleVector(t testing.TB, typ Type, x []float32, n, v int) *Activation {
	t.Helper()
	var a Activation
	if err := a.Prepare(typ, x[v*n:(v+1)*n]); err != nil {
		t.Fatal(err)
	}
	return &a
}

// TestMatMulMatchesOracle holds whatever kernels are installed to the plain Go dot products, on
// every type, shape and batch size, within a bound of float32 rounding over the products' sizes.
func TestMatMulMatchesOracle(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, typ := range weightTypes {
		for _, cols := range colsFor(typ) {
			for _, rows := range matRows {
				w, err := NewMatrix(typ, rows, cols, randomRows(r, typ, rows, cols))
				if err != nil {
					t.Fatal(err)
				}
				count := matCount[r.IntN(len(matCount))]
				a, _ := prepareVectors(t, r, typ, count, cols)
				dst := make([]float32, count*rows)
				MatMulRows(dst, w, a, 0, rows)
				rb := w.rowBytes()
				for v := range count {
					x := a.vector(v)
					values := activationValues(singleView(a, v))
					for row := range rows {
						rowData := w.Data[row*rb : (row+1)*rb]
						wf := dequant(t, typ, cols, rowData)
						mag := magnitudes(typ, rowData, wf)
						var scale float64
						for i := range cols {
							scale += mag[i] * math.Abs(values[i])
						}
						oracle := goKernels[typ](rowData, x)
						got := dst[v*rows+row]
						if d := math.Abs(float64(got - oracle)); d > 1e-5*scale+1e-30 || math.IsNaN(float64(got)) {
							t.Fatalf("%s %dx%d, vector %d of %d, row %d: kernel %g, Go oracle %g (|terms| %g)",
								typ, rows, cols, v, count, row, got, oracle, scale)
						}
					}
				}
			}
		}
	}
}

// singleView is vector v of a as a batch of one, sharing a's buffers.
func singleView(a *Activation, v int) *Activation {
	x := a.vector(v)
	return &Activation{format: a.format, n: a.n, count: 1, f32: x.f32, qs: x.qs, d: x.d, bsums: x.bsums}
}

// TestMatMulBatchInvariant checks the promise every kernel makes: a result's bits depend only on its
// row and its vector, not on the batch around it, the rows computed with it or where the range starts.
func TestMatMulBatchInvariant(t *testing.T) {
	r := rand.New(rand.NewPCG(23, 24))
	for _, typ := range weightTypes {
		for _, cols := range colsFor(typ) {
			const rows = 13
			w, err := NewMatrix(typ, rows, cols, randomRows(r, typ, rows, cols))
			if err != nil {
				t.Fatal(err)
			}
			for _, count := range matCount {
				a, x := prepareVectors(t, r, typ, count, cols)
				whole := make([]float32, count*rows)
				MatMulRows(whole, w, a, 0, rows)
				split := make([]float32, count*rows)
				for lo := 0; lo < rows; {
					hi := min(rows, lo+1+r.IntN(5))
					MatMulRows(split, w, a, lo, hi)
					lo = hi
				}
				for v := range count {
					alone := make([]float32, rows)
					MatMulRows(alone, w, singleVector(t, typ, x, cols, v), 0, rows)
					for row := range rows {
						b, s, one := whole[v*rows+row], split[v*rows+row], alone[row]
						if math.Float32bits(b) != math.Float32bits(one) || math.Float32bits(s) != math.Float32bits(one) {
							t.Fatalf("%s cols %d, vector %d of %d, row %d: batch %g, split rows %g, alone %g",
								typ, cols, v, count, row, b, s, one)
						}
					}
				}
			}
		}
	}
}

// TestMatMulNoAllocation: the batched product allocates nothing, whatever kernel runs it.
func TestMatMulNoAllocation(t *testing.T) {
	r := rand.New(rand.NewPCG(25, 26))
	for _, typ := range weightTypes {
		w, _ := NewMatrix(typ, 8, 512, randomRows(r, typ, 8, 512))
		a, _ := prepareVectors(t, r, typ, 5, 512)
		dst := make([]float32, 5*8)
		if allocs := testing.AllocsPerRun(20, func() { MatMulRows(dst, w, a, 0, 8) }); allocs != 0 {
			t.Errorf("%s: %g allocations per MatMulRows", typ, allocs)
		}
	}
}
