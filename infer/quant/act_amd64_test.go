package quant

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"golang.org/x/sys/cpu"
)

func haveActAVX2(t testing.TB) {
	t.Helper()
	if !(cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasF16C) {
		t.Skip("no AVX2/FMA/F16C on this CPU")
	}
}

const guard = 7 // elements past the end of each output, which neither version may write

// checkQ8_0 converts x with the Go and the AVX2 version into outputs that start out alike and
// reports any difference in the bits.
func checkQ8_0(t *testing.T, name string, x []float32) {
	t.Helper()
	nb := len(x) / qk0
	qa, qb := make([]int8, nb*qk0+guard), make([]int8, nb*qk0+guard)
	da, db := make([]float32, nb+guard), make([]float32, nb+guard)
	for i := range qa {
		qa[i], qb[i] = 0x5a, 0x5a
	}
	for i := range da {
		da[i], db[i] = -3.25, -3.25
	}
	quantizeActQ8_0(qa[:nb*qk0], da[:nb], x)
	quantizeActQ8_0AVX2(qb[:nb*qk0], db[:nb], x)
	if i := firstDiff(qa, qb); i >= 0 {
		t.Fatalf("%s: q8_0 quant %d (block %d): Go %d, AVX2 %d; block %v", name, i, i/qk0, qa[i], qb[i], blockOf(x, i/qk0, qk0))
	}
	if i := firstDiffF32(da, db); i >= 0 {
		t.Fatalf("%s: q8_0 scale %d: Go %g (%#x), AVX2 %g (%#x); block %v", name, i, da[i], math.Float32bits(da[i]), db[i], math.Float32bits(db[i]), blockOf(x, i, qk0))
	}
}

func checkQ8K(t *testing.T, name string, x []float32) {
	t.Helper()
	nb := len(x) / qkK
	qa, qb := make([]int8, nb*qkK+guard), make([]int8, nb*qkK+guard)
	da, db := make([]float32, nb+guard), make([]float32, nb+guard)
	sa, sb := make([]int16, nb*16+guard), make([]int16, nb*16+guard)
	for i := range qa {
		qa[i], qb[i] = 0x5a, 0x5a
	}
	for i := range da {
		da[i], db[i] = -3.25, -3.25
	}
	for i := range sa {
		sa[i], sb[i] = 0x5a5a, 0x5a5a
	}
	quantizeActQ8K(qa[:nb*qkK], da[:nb], sa[:nb*16], x)
	quantizeActQ8KAVX2(qb[:nb*qkK], db[:nb], sb[:nb*16], x)
	if i := firstDiff(qa, qb); i >= 0 {
		t.Fatalf("%s: q8K quant %d (block %d): Go %d, AVX2 %d", name, i, i/qkK, qa[i], qb[i])
	}
	if i := firstDiffF32(da, db); i >= 0 {
		t.Fatalf("%s: q8K scale %d: Go %g (%#x), AVX2 %g (%#x)", name, i, da[i], math.Float32bits(da[i]), db[i], math.Float32bits(db[i]))
	}
	if i := firstDiff(sa, sb); i >= 0 {
		t.Fatalf("%s: q8K bsum %d (block %d): Go %d, AVX2 %d", name, i, i/16, sa[i], sb[i])
	}
}

// checkRound compares the F16 and BF16 round trips on x, bit for bit (NaNs included).
func checkRound(t *testing.T, name string, x []float32) {
	t.Helper()
	for _, k := range []struct {
		name     string
		go_, asm func(dst, src []float32)
	}{{"f16", roundRowsF16, roundRowsF16AVX2}, {"bf16", roundRowsBF16, roundRowsBF16AVX2}} {
		a, b := make([]float32, len(x)+guard), make([]float32, len(x)+guard)
		for i := range a {
			a[i], b[i] = -3.25, -3.25
		}
		k.go_(a[:len(x)], x)
		k.asm(b[:len(x)], x)
		if i := firstDiffF32(a, b); i >= 0 {
			var in uint32
			if i < len(x) {
				in = math.Float32bits(x[i])
			}
			t.Fatalf("%s: %s element %d of %d (input %#x): Go %#x, AVX2 %#x", name, k.name, i, len(x), in, math.Float32bits(a[i]), math.Float32bits(b[i]))
		}
	}
}

func firstDiff[T comparable](a, b []T) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func firstDiffF32(a, b []float32) int {
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return i
		}
	}
	return -1
}

func blockOf(x []float32, b, size int) []float32 {
	if (b+1)*size > len(x) {
		return nil
	}
	return x[b*size : (b+1)*size]
}

// actVectors returns the test inputs for blocks of size bs: named vectors of several block counts.
func actVectors(r *rand.Rand, bs int) map[string][]float32 {
	out := map[string][]float32{}
	counts := []int{1, 2, 3, 5, 7, 16, 17}
	if bs == qk0 {
		counts = append(counts, 33, 127, 128)
	}
	normal := func(n int, scale float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * scale)
		}
		return x
	}
	// Random values over many magnitudes, from float32 subnormals (where 127/amax overflows and
	// the Go code takes the block) to near the float32 limit.
	for _, scale := range []float64{1e-44, 1e-40, 1e-38, 1e-37, 1e-30, 1e-6, 1e-3, 0.02, 1, 100, 6e4, 1e6, 1e30, 1e38} {
		for _, nb := range counts {
			out[fmt.Sprintf("normal %g x%d", scale, nb)] = normal(nb*bs, scale)
		}
	}
	// Each block at its own magnitude.
	for _, nb := range counts {
		x := normal(nb*bs, 1)
		for b := range nb {
			s := float32(math.Pow(10, float64(r.IntN(60)-30)))
			for i := b * bs; i < (b+1)*bs; i++ {
				x[i] *= s
			}
		}
		out[fmt.Sprintf("mixed x%d", nb)] = x
	}
	// Outliers: one element per block far above the rest, of either sign, anywhere.
	for _, nb := range counts {
		x := normal(nb*bs, 0.01)
		for b := range nb {
			x[b*bs+r.IntN(bs)] = float32(r.NormFloat64() * 50)
		}
		out[fmt.Sprintf("outliers x%d", nb)] = x
	}
	// The largest magnitude at the first and the last element, negative.
	for _, nb := range counts {
		x := normal(nb*bs, 1)
		for b := range nb {
			if b%2 == 0 {
				x[b*bs] = -10
			} else {
				x[b*bs+bs-1] = -10
			}
		}
		out[fmt.Sprintf("extreme ends x%d", nb)] = x
	}
	// Ties in the largest magnitude: several elements of equal magnitude and random signs; the
	// first one's sign decides Q8_K's scale.
	for _, nb := range counts {
		x := normal(nb*bs, 1)
		for b := range nb {
			m := float32(5 + r.IntN(3))
			for range 2 + r.IntN(4) {
				v := m
				if r.IntN(2) == 0 {
					v = -m
				}
				x[b*bs+r.IntN(bs)] = v
			}
		}
		out[fmt.Sprintf("amax ties x%d", nb)] = x
	}
	// Every element of equal magnitude, signs alternating from either sign.
	for _, nb := range counts {
		x := make([]float32, nb*bs)
		for i := range x {
			x[i] = 3
			if (i+i/bs)%2 == 0 {
				x[i] = -3
			}
		}
		out[fmt.Sprintf("all ties x%d", nb)] = x
	}
	// Negative extremes: -MaxFloat32 and the smallest subnormal as the largest magnitudes.
	for _, nb := range counts {
		x := normal(nb*bs, 1e37)
		for b := range nb {
			x[b*bs+r.IntN(bs)] = -math.MaxFloat32
		}
		out[fmt.Sprintf("-max x%d", nb)] = x
		y := make([]float32, nb*bs)
		for b := range nb {
			y[b*bs+r.IntN(bs)] = -math.SmallestNonzeroFloat32
			y[b*bs+r.IntN(bs)] = math.SmallestNonzeroFloat32
		}
		out[fmt.Sprintf("subnormal x%d", nb)] = y
	}
	// Exact halfway cases for the rounding of the quants: the largest magnitude m = 127*2^e (of
	// either sign) makes the scale an exact power of two (127/m = 2^-e, -127/mx = -+2^-e), and the
	// other elements (k+1/2)*2^e then scale to exact halves k+1/2 that round to even.
	for _, e := range []int{-20, -3, 0, 1, 7, 30} {
		p := float32(math.Ldexp(1, e))
		for _, nb := range counts {
			x := make([]float32, nb*bs)
			for b := range nb {
				for i := b * bs; i < (b+1)*bs; i++ {
					k := float32(r.IntN(254) - 127)
					if r.IntN(4) != 0 {
						k += 0.5
					}
					x[i] = k * p
				}
				m := 127 * p
				if b%2 == 1 {
					m = -m
				}
				x[b*bs+r.IntN(bs)] = m
			}
			out[fmt.Sprintf("quant halves 2^%d x%d", e, nb)] = x
		}
	}
	// Exact halfway cases for Q8_0's fp16 scale: amax = 127*h with h halfway between two fp16
	// values (normal and subnormal), so that amax/127 = h exactly and the fp16 rounding ties.
	for _, nb := range counts {
		x := normal(nb*bs, 1e-3)
		for b := range nb {
			var h float64
			switch b % 4 {
			case 0:
				h = 1 + math.Ldexp(1, -11) // ties down to even 1
			case 1:
				h = 1 + 3*math.Ldexp(1, -11) // ties up to even
			case 2:
				h = math.Ldexp(5, -25) // between subnormals 2*2^-24 and 3*2^-24: to even 2
			case 3:
				h = math.Ldexp(1, -25) // half the smallest subnormal: to zero
			}
			for i := b * bs; i < (b+1)*bs; i++ {
				x[i] *= float32(h)
			}
			x[b*bs+r.IntN(bs)] = float32(127 * h)
		}
		out[fmt.Sprintf("scale halves x%d", nb)] = x
	}
	// All-zero blocks (with negative zeros) between ordinary ones.
	for _, nb := range counts {
		x := normal(nb*bs, 1)
		for b := range nb {
			if b%2 == 0 || b%3 == 0 {
				for i := b * bs; i < (b+1)*bs; i++ {
					x[i] = 0
					if r.IntN(2) == 0 {
						x[i] = float32(math.Copysign(0, -1))
					}
				}
			}
		}
		out[fmt.Sprintf("zero blocks x%d", nb)] = x
	}
	// Infinities and NaNs (quiet, signalling, negative) in some blocks: the Go code converts those.
	specials := []float32{
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0x7f800001), math.Float32frombits(0xffc00000), math.Float32frombits(0x7fa5a5a5),
	}
	for _, nb := range counts {
		for si, s := range specials {
			x := normal(nb*bs, 1)
			for b := range nb {
				if (b+si)%3 == 0 {
					x[b*bs+r.IntN(bs)] = s
					if r.IntN(2) == 0 {
						x[b*bs+r.IntN(bs)] = specials[r.IntN(len(specials))]
					}
				}
			}
			out[fmt.Sprintf("specials %d x%d", si, nb)] = x
		}
		x := make([]float32, nb*bs) // NaNs among zeros: Q8_K's strict > skips NaNs
		x[r.IntN(len(x))] = float32(math.NaN())
		out[fmt.Sprintf("nan in zeros x%d", nb)] = x
	}
	return out
}

// TestActAVX2MatchesGo holds the AVX2 activation conversions to the Go versions bit for bit.
func TestActAVX2MatchesGo(t *testing.T) {
	haveActAVX2(t)
	r := rand.New(rand.NewPCG(41, 42))
	for name, x := range actVectors(r, qk0) {
		checkQ8_0(t, name, x)
		checkRound(t, name, x)
	}
	for name, x := range actVectors(r, qkK) {
		checkQ8K(t, name, x)
		checkRound(t, name, x)
	}
	checkQ8_0(t, "empty", nil)
	checkQ8K(t, "empty", nil)
	for n := range 80 { // every tail length of the round trips
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		checkRound(t, fmt.Sprint("length ", n), x)
	}
}

// TestActAVX2Fast checks that ordinary blocks take the assembly path: only blocks with Inf, NaN or
// a scale that overflows should fall back to the Go code.
func TestActAVX2Fast(t *testing.T) {
	haveActAVX2(t)
	r := rand.New(rand.NewPCG(5, 6))
	x := make([]float32, 16*qkK)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for i := range qk0 { // a zero block, and one of subnormals under a largest magnitude whose 127/amax is still finite
		x[i] = 0
		x[qk0+i] = float32(math.Ldexp(float64(i), -140))
	}
	x[2*qk0-1] = float32(math.Ldexp(1, -115))
	q, d, s := make([]int8, len(x)), make([]float32, len(x)/qk0), make([]int16, len(x)/16)
	if n := actQ8_0AVX2(&q[0], &d[0], &x[0], len(d)); n != len(d) {
		t.Errorf("Q8_0: assembly did %d of %d blocks", n, len(d))
	}
	for i := range qkK {
		x[i] = 0
	}
	if n := actQ8KAVX2(&q[0], &d[0], &s[0], &x[0], len(x)/qkK); n != len(x)/qkK {
		t.Errorf("Q8_K: assembly did %d of %d blocks", n, len(x)/qkK)
	}
}

// TestActAVX2RoundSweep compares the round trips on every float32 whose low 16 bits are one of a
// set of patterns around the rounding points of BF16 (bit 15) and of F16, normal (bit 12) and
// subnormal (bits 13-23, covered by the high halves), with every sign, exponent and NaN payload
// in the high half.
func TestActAVX2RoundSweep(t *testing.T) {
	haveActAVX2(t)
	lows := []uint32{0, 1, 0x7fff, 0x8000, 0x8001, 0xffff, 0xfffe, 0x0fff, 0x1000, 0x1001, 0x2fff, 0x3000, 0x3001}
	for k := range 16 {
		lows = append(lows, 1<<k, 1<<k-1, 1<<k+1, 3<<k&0xffff)
	}
	slices.Sort(lows)
	lows = slices.Compact(lows)
	x := make([]float32, 0, 1<<16*len(lows))
	for hi := range uint32(1 << 16) {
		for _, lo := range lows {
			x = append(x, math.Float32frombits(hi<<16|lo))
		}
	}
	checkRound(t, "sweep", x)
}

func TestActAVX2NoAllocs(t *testing.T) {
	haveActAVX2(t)
	x := make([]float32, 8*qkK)
	for i := range x {
		x[i] = float32(i%37) - 18
	}
	x[5] = float32(math.NaN()) // one fallback block too
	q, d, s, y := make([]int8, len(x)), make([]float32, len(x)/qk0), make([]int16, len(x)/16), make([]float32, len(x))
	for name, f := range map[string]func(){
		"q8_0": func() { quantizeActQ8_0AVX2(q, d, x) },
		"q8K":  func() { quantizeActQ8KAVX2(q, d[:len(x)/qkK], s, x) },
		"f16":  func() { roundRowsF16AVX2(y, x) },
		"bf16": func() { roundRowsBF16AVX2(y, x) },
	} {
		if n := testing.AllocsPerRun(20, f); n != 0 {
			t.Errorf("%s: %v allocations", name, n)
		}
	}
}

// BenchmarkActQuant times the conversions of one 4096-element activation vector, Go and AVX2.
func BenchmarkActQuant(b *testing.B) {
	haveActAVX2(b)
	const n = 4096
	r := rand.New(rand.NewPCG(1, 2))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	q, d, s, y := make([]int8, n), make([]float32, n/qk0), make([]int16, n/16), make([]float32, n)
	for _, k := range []struct {
		name    string
		go_, vx func()
	}{
		{"q8_0", func() { quantizeActQ8_0(q, d, x) }, func() { quantizeActQ8_0AVX2(q, d, x) }},
		{"q8K", func() { quantizeActQ8K(q, d[:n/qkK], s, x) }, func() { quantizeActQ8KAVX2(q, d[:n/qkK], s, x) }},
		{"f16", func() { roundRowsF16(y, x) }, func() { roundRowsF16AVX2(y, x) }},
		{"bf16", func() { roundRowsBF16(y, x) }, func() { roundRowsBF16AVX2(y, x) }},
	} {
		for _, impl := range []struct {
			name string
			f    func()
		}{{"go", k.go_}, {"avx2", k.vx}} {
			b.Run(k.name+"/"+impl.name, func(b *testing.B) {
				b.SetBytes(4 * n)
				for b.Loop() {
					impl.f()
				}
			})
		}
	}
}
