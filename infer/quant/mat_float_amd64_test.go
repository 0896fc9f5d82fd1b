package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// fma32 is a*b+c rounded once to float32, as VFMADD231PS computes it: the product is exact in
// float64, the sum is computed with its rounding error (TwoSum) and rounded to odd, and rounding an
// odd-rounded float64 to float32 is correct (53 >= 24+2 bits).
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	s := p + float64(c)
	bb := s - p
	e := (p - (s - bb)) + (float64(c) - bb)
	if bits := math.Float64bits(s); e != 0 && bits&1 == 0 {
		if (e > 0) == (s > 0) {
			bits++
		} else {
			bits--
		}
		s = math.Float64frombits(bits)
	}
	return float32(s)
}

// ggmlDot is ggml's AVX2 ggml_vec_dot_f32 (typ F32), ggml_vec_dot_f16 (F16) or ggml_vec_dot_bf16
// (BF16) of weights w (already converted to float32) and x, operation by operation in scalar Go.
func ggmlDot(typ Type, w, x []float32) float32 {
	n := len(x)
	np := n &^ 31
	var acc [4][8]float32
	for i := 0; i < np; i += 32 {
		for j := range 4 {
			for l := range 8 {
				k := i + 8*j + l
				if typ == BF16 {
					acc[j][l] += float32(w[k] * x[k])
				} else {
					acc[j][l] = fma32(w[k], x[k], acc[j][l])
				}
			}
		}
	}
	var a [8]float32
	for l := range 8 {
		a[l] = float32(acc[0][l]+acc[2][l]) + float32(acc[1][l]+acc[3][l])
	}
	var g [4]float32
	for l := range 4 {
		g[l] = a[l] + a[l+4]
	}
	switch typ {
	case F32:
		s := float32(g[0]+g[1]) + float32(g[2]+g[3])
		for i := np; i < n; i++ {
			s = fma32(w[i], x[i], s)
		}
		return s
	case F16:
		s := float64(float32(g[0]+g[1]) + float32(g[2]+g[3]))
		for i := np; i < n; i++ {
			s += float64(float32(w[i] * x[i]))
		}
		return float32(s)
	default:
		s := 0 + float64(float32(g[0]+g[2])+float32(g[1]+g[3]))
		for i := np; i < n; i++ {
			s += float64(float32(w[i] * x[i]))
		}
		return float32(s)
	}
}

// TestFloatKernelsMatchGGML holds the installed F32, F16 and BF16 kernels to ggml's operation order,
// bit for bit, on row lengths with every remainder mod 32 (and several K-blocks of the tile kernel)
// and shapes that use every tile and leftover path.
func TestFloatKernelsMatchGGML(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	lengths := []int{1, 7, 8, 31, 32, 33, 63, 64, 95, 100, 256, 257, 300, 511, 512, 513, 777, 1100}
	shapes := [][2]int{{1, 1}, {3, 4}, {7, 9}, {6, 8}, {5, 3}, {0, 0}} // rows, vectors; {0, 0}: random
	for _, typ := range []Type{F32, F16, BF16} {
		for _, n := range lengths {
			for _, shape := range shapes {
				rows, count := shape[0], shape[1]
				if rows == 0 {
					rows, count = 1+r.IntN(7), 1+r.IntN(12)
				}
				w, err := NewMatrix(typ, rows, n, randomRows(r, typ, rows, n))
				if err != nil {
					t.Fatal(err)
				}
				a, _ := prepareVectors(t, r, typ, count, n)
				dst := make([]float32, count*rows)
				MatMulRows(dst, w, a, 0, rows)
				rb := w.rowBytes()
				wf := make([]float32, n)
				for row := range rows {
					dequantizeRow(typ, wf, w.Data[row*rb:(row+1)*rb])
					for v := range count {
						want := ggmlDot(typ, wf, a.f32[v*n:(v+1)*n])
						if got := dst[v*rows+row]; math.Float32bits(got) != math.Float32bits(want) {
							t.Fatalf("%s n %d, row %d of %d, vector %d of %d: kernel %g (%#x), ggml order %g (%#x)",
								typ, n, row, rows, v, count, got, math.Float32bits(got), want, math.Float32bits(want))
						}
					}
				}
			}
		}
	}
}

func TestFMA32(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	for range 100000 {
		a, b, c := float32(r.NormFloat64()), float32(r.NormFloat64()), float32(r.NormFloat64())
		if got, want := fma32(a, b, c), float32(math.FMA(float64(a), float64(b), float64(c))); got != want {
			// math.FMA then float32 rounds twice; it may differ only where the float64 is a tie.
			if d := math.Float64bits(math.FMA(float64(a), float64(b), float64(c))); d&(1<<29-1) != 1<<28 {
				t.Fatalf("fma32(%g, %g, %g) = %g, want %g", a, b, c, got, want)
			}
		}
	}
	// 1 + 2^-23 + (2^-24 - 2^-60) is just below the float32 midpoint 1 + 3*2^-24, so it rounds down
	// to 1 + 2^-23; rounded to float64 first it becomes the midpoint, which rounds to even (up).
	a, b, c := float32(0x1p-12+0x1p-30), float32(0x1p-12-0x1p-30), float32(1+0x1p-23)
	if got := fma32(a, b, c); got != c {
		t.Errorf("fma32 rounds a double-rounding case to 1%+g, want 1%+g", got-1, c-1)
	}
	if twice := float32(math.FMA(float64(a), float64(b), float64(c))); twice == c {
		t.Errorf("the double-rounding case is not one")
	}
}

// TestFloatDotNoAllocation: the single-row kernels allocate nothing (DotRow can use them).
func TestFloatDotNoAllocation(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	for _, typ := range []Type{F32, F16, BF16} {
		w, _ := NewMatrix(typ, 1, 512, randomRows(r, typ, 1, 512))
		a, _ := prepareVectors(t, r, typ, 1, 512)
		dot := dotKernels[typ]
		var sink float32
		if allocs := testing.AllocsPerRun(20, func() { sink += dot(w.Data, a.vector(0)) }); allocs != 0 {
			t.Errorf("%s: %g allocations per dot", typ, allocs)
		}
		if got, want := dot(w.Data, a.vector(0)), ggmlDot(typ, dequant(t, typ, 512, w.Data), a.f32); got != want {
			t.Errorf("%s: dot %g, ggml order %g", typ, got, want)
		}
	}
}
