package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func quantize(t *testing.T, typ Type, x []float32) []byte {
	t.Helper()
	rb, err := RowBytes(typ, len(x))
	if err != nil {
		t.Fatal(err)
	}
	q := make([]byte, rb)
	if err := Quantize(typ, q, x); err != nil {
		t.Fatalf("Quantize(%s): %v", typ, err)
	}
	return q
}

func gaussian(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	return x
}

// TestRoundTripError quantises and dequantises test vectors and bounds the error two ways: the
// largest error in a block relative to the block's largest magnitude, and the RMS error relative to
// the RMS of the data. Q8_0 and Q4_0 bounds are derived: half a step plus the fp16 rounding of d
// (Q8_0: 0.5/127 + 127.5/127*2^-11 ≈ 0.0044), and a full step for Q4_0, whose positive extreme clips
// from +8 to +7 (1/8). The K-quant bounds sit just above what ggml's reference quantisers reach on
// Gaussian data (RMS: Q4_K 0.072, Q6_K 0.018), so a broken scale search fails them.
func TestRoundTripError(t *testing.T) {
	cases := []struct {
		t        Type
		maxRel   float64 // max |error| / max |x| of the block
		gaussRMS float64 // RMS error / RMS of Gaussian data
	}{
		{F32, 0, 0},
		{F16, 1.0 / 2048, 1.0 / 2048},
		{BF16, 1.0 / 256, 1.0 / 256},
		{Q8_0, 0.0045, 0.006},
		{Q4_0, 0.1255, 0.09},
		{Q4_K, 0.12, 0.075},
		{Q6_K, 0.02, 0.019},
	}
	r := rand.New(rand.NewPCG(5, 6))
	n := 256 * 32
	gauss := gaussian(r, n, 1)
	uniform := make([]float32, n)
	outliers := gaussian(r, n, 0.02)
	positive := make([]float32, n)
	for i := range uniform {
		uniform[i] = float32(r.Float64()*2 - 1)
		positive[i] = float32(r.Float64() + 0.5)
		if i%97 == 0 {
			outliers[i] = 1
		}
	}
	for _, c := range cases {
		for _, d := range []struct {
			name string
			x    []float32
		}{{"gaussian", gauss}, {"uniform", uniform}, {"outliers", outliers}, {"positive", positive}} {
			y := dequant(t, c.t, n, quantize(t, c.t, d.x))
			bs := max(c.t.BlockSize(), 32) // float types: relative to each 32 values
			var se, sx float64
			for b := 0; b < n; b += bs {
				var amax float64
				for _, v := range d.x[b : b+bs] {
					amax = math.Max(amax, math.Abs(float64(v)))
				}
				for i := b; i < b+bs; i++ {
					e := math.Abs(float64(y[i]) - float64(d.x[i]))
					if e > c.maxRel*amax {
						t.Fatalf("%s %s: element %d: %g came back as %g, error %g > %g*%g",
							c.t, d.name, i, d.x[i], y[i], e, c.maxRel, amax)
					}
					se += e * e
					sx += float64(d.x[i]) * float64(d.x[i])
				}
			}
			if d.name == "gaussian" {
				if rel := math.Sqrt(se / sx); rel > c.gaussRMS {
					t.Errorf("%s: relative RMS error %.5f > %.5f", c.t, rel, c.gaussRMS)
				}
			}
		}
	}
}

func TestRoundTripSpecialBlocks(t *testing.T) {
	for _, typ := range []Type{Q8_0, Q4_0, Q4_K, Q6_K} {
		zeros := make([]float32, 256)
		for i, v := range dequant(t, typ, 256, quantize(t, typ, zeros)) {
			if v != 0 {
				t.Fatalf("%s: zero block element %d came back as %g", typ, i, v)
			}
		}
		// Constant and single-spike blocks: nothing to spread the error over.
		for _, c := range []struct {
			name string
			fill func(i int) float32
			tol  float64
		}{
			{"constant", func(int) float32 { return 0.3 }, 0.3 / 15},
			{"negative constant", func(int) float32 { return -0.3 }, 0.3 / 15},
			{"spike", func(i int) float32 {
				if i == 77 {
					return -5
				}
				return 0
			}, 5.0 / 15},
		} {
			x := make([]float32, 256)
			for i := range x {
				x[i] = c.fill(i)
			}
			y := dequant(t, typ, 256, quantize(t, typ, x))
			for i := range x {
				if e := math.Abs(float64(y[i] - x[i])); e > c.tol {
					t.Fatalf("%s %s: element %d: %g came back as %g", typ, c.name, i, x[i], y[i])
				}
			}
		}
	}
}

// TestRoundTripExact uses values each format represents exactly, so any packing slip shows.
func TestRoundTripExact(t *testing.T) {
	// Q8_0: integers with 127 in every block give d = 1 exactly.
	x := make([]float32, 64)
	for i := range x {
		x[i] = float32(i*37%255 - 127)
	}
	x[5], x[40] = 127, -127
	checkFloats(t, "Q8_0", dequant(t, Q8_0, 64, quantize(t, Q8_0, x)), x)

	// Q4_0: integers in [-8, 7] with -8 the largest magnitude give d = 1 and q = x+8.
	for i := range x {
		x[i] = float32(i*5%16 - 8)
	}
	x[0], x[32] = -8, -8
	q := quantize(t, Q4_0, x)
	if q[0] != 0x00 || q[1] != 0x3c {
		t.Errorf("Q4_0 d = %02x%02x, want 3c00", q[1], q[0])
	}
	for j := range 16 {
		if want := byte(x[j]+8) | byte(x[j+16]+8)<<4; q[2+j] != want {
			t.Errorf("Q4_0 qs[%d] = %#02x, want %#02x", j, q[2+j], want)
		}
	}
	checkFloats(t, "Q4_0", dequant(t, Q4_0, 64, q), x)
}

func TestQuantizeErrors(t *testing.T) {
	ok := make([]float32, 256)
	cases := []struct {
		name string
		t    Type
		dst  int
		src  []float32
	}{
		{"short destination", Q4_K, 143, ok},
		{"long destination", Q6_K, 211, ok},
		{"partial block", Q8_0, 34, ok[:31]},
		{"unsupported", Type(11), 110, ok},
		{"activation type", Q8_K, 292, ok},
		{"NaN", Q4_0, 18 * 8, append(make([]float32, 255), float32(math.NaN()))},
		{"infinity", Q6_K, 210, append(make([]float32, 255), float32(math.Inf(-1)))},
		{"too large for an fp16 scale", Q4_0, 18 * 8, append(make([]float32, 255), 1e7)},
		{"too large for Q8_0", Q8_0, 34 * 8, append(make([]float32, 255), 1e9)},
		{"too large for Q4_K", Q4_K, 144, append(make([]float32, 255), 1e9)},
		{"too large for Q6_K", Q6_K, 210, append(make([]float32, 255), 1e12)},
	}
	for _, c := range cases {
		if err := Quantize(c.t, make([]byte, c.dst), c.src); err == nil {
			t.Errorf("%s: Quantize(%s) succeeded", c.name, c.t)
		}
	}
	// Float types carry NaN and infinity through.
	for _, typ := range []Type{F32, F16, BF16} {
		x := []float32{float32(math.NaN()), float32(math.Inf(1)), -1}
		y := dequant(t, typ, 3, quantize(t, typ, x))
		if !math.IsNaN(float64(y[0])) || !math.IsInf(float64(y[1]), 1) || y[2] != -1 {
			t.Errorf("%s: %v came back as %v", typ, x, y)
		}
	}
}

func TestNearestInt(t *testing.T) {
	cases := map[float32]int{0: 0, 0.5: 0, 1.5: 2, 2.5: 2, -0.5: 0, -1.5: -2, -2.5: -2, 126.7: 127, -127.49: -127, 4194303: 4194303}
	for f, want := range cases {
		if got := nearestInt(f); got != want {
			t.Errorf("nearestInt(%g) = %d, want %d", f, got, want)
		}
	}
}
