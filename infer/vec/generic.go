package vec

import "math"

// The plain Go versions: the fallback where the assembly cannot run, and the tests' oracle. Each
// runs the operations of the assembly (and of ggml) in the same order with the same roundings:
// fused multiply-adds through fma32, every other product converted to float32 explicitly so that
// the compiler cannot fuse it into an addition.

func dotsF16Go(dst []float32, q []float32, k []uint16, stride int) {
	for t := range dst {
		dst[t] = dotF16Go(q, k[t*stride:t*stride+len(q)])
	}
}

// dotF16Go is ggml_vec_dot_f16 (AVX2 build) of the F16 row k and q.
func dotF16Go(q []float32, k []uint16) float32 {
	n := len(q)
	np := n &^ 31
	var acc [4][8]float32
	for i := 0; i < np; i += 32 {
		for j := range 4 {
			for l := range 8 {
				e := i + 8*j + l
				acc[j][l] = fma32(f16Table[k[e]], q[e], acc[j][l])
			}
		}
	}
	sum := float64(reduce8x4(&acc))
	for i := np; i < n; i++ {
		sum += float64(float32(f16Table[k[i]] * q[i]))
	}
	return float32(sum)
}

// reduce8x4 is GGML_F32x8_REDUCE over four accumulators: a0+a2 and a1+a3, their sum, then the low
// half plus the high half and two horizontal adds.
func reduce8x4(acc *[4][8]float32) float32 {
	var a [8]float32
	for l := range 8 {
		a[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l])
	}
	var g [4]float32
	for l := range 4 {
		g[l] = a[l] + a[l+4]
	}
	return (g[0] + g[1]) + (g[2] + g[3])
}

func axpysF16Go(out []float32, p []float32, v []uint16, stride int) {
	for t, pt := range p {
		row := v[t*stride : t*stride+len(out)]
		for d, h := range row {
			out[d] = fma32(pt, f16Table[h], out[d])
		}
	}
}

func maxF32Go(x []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range x {
		if !(m > v) { // ggml's MAX(max, x[i])
			m = v
		}
	}
	return m
}

// expSubGo sets x[i] = ggml_v_expf(x[i]-m) for len(x) a multiple of 8, and returns the float64 sum
// of the groups' float32 sums, each reduced as ggml_vec_soft_max_f32's AVX2 loop does.
func expSubGo(x []float32, m float32) float64 {
	var sum float64
	for i := 0; i+8 <= len(x); i += 8 {
		var g [8]float32
		for l := range 8 {
			g[l] = expGGML(x[i+l] - m)
			x[i+l] = g[l]
		}
		sum += float64(hsum8(&g))
	}
	return sum
}

// hsum8 is the AVX2 horizontal sum of ggml_vec_soft_max_f32: high half + low half, then
// g + movehl(g) and lane 0 + lane 1.
func hsum8(g *[8]float32) float32 {
	var h [4]float32
	for l := range 4 {
		h[l] = g[l] + g[l+4]
	}
	return (h[0] + h[2]) + (h[1] + h[3])
}

func scaleGo(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

// swiglu8Go is the vector loop of ggml_vec_swiglu_f32: gate[i] = ggml_v_silu(gate[i]) * up[i],
// with ggml_v_silu(x) = x / (1 + ggml_v_expf(0-x)).
func swiglu8Go(gate, up []float32) {
	for i, x := range gate {
		gate[i] = x / (1 + expGGML(0-x)) * up[i]
	}
}

func roundF16Go(dst, src []float32) {
	for i, v := range src {
		dst[i] = f16Table[f32ToF16(v)]
	}
}

func toF16Go(dst []uint16, src []float32) {
	for i, v := range src {
		dst[i] = f32ToF16(v)
	}
}

func fromF16Go(dst []float32, src []uint16) {
	for i, h := range src {
		dst[i] = f16Table[h]
	}
}

func addGo(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

// expGGML is ggml_v_expf (ggml-cpu/vec.h, the AVX2 variant: "adapted from arm limited optimized
// routine, the maximum error is 1.45358 plus 0.5 ulps") for one lane, operation by operation:
// n = round(x/ln2) by the 1.5*2^23 shifter, b = x - n*ln2 in two parts, a degree-5 polynomial in b
// (Estrin's scheme, as the vector code groups it), scaled by 2^n built in the exponent bits, with
// the large-|n| path that splits the scale in two so results near overflow and underflow stay
// right (above 88.38 infinity, below -103.97 zero).
func expGGML(x float32) float32 {
	const r = 0x1.8p23
	z := fma32(x, 0x1.715476p+0, r)
	n := z - r
	b := fma32(-n, 0x1.7f7d1cp-20, fma32(-n, 0x1.62e4p-1, x))
	e := math.Float32bits(z) << 23
	k := math.Float32frombits(e + math.Float32bits(1))
	u := float32(b * b)
	j := fma32(fma32(fma32(0x1.0e4020p-7, b, 0x1.573e2ep-5), u, fma32(0x1.555e66p-3, b, 0x1.fffdb6p-2)),
		u, float32(0x1.ffffecp-1*b))
	an := float32(math.Abs(float64(n)))
	if !(an > 126) {
		return fma32(j, k, k)
	}
	var g uint32
	if n <= 0 {
		g = 0x82000000
	}
	s1 := math.Float32frombits(g + 0x7f000000)
	s2 := math.Float32frombits(e - g)
	if an > 192 {
		return float32(s1 * s1)
	}
	return float32(fma32(s2, j, s2) * s1)
}

// expf stands for the C library's expf in ggml's scalar tails: exp in float64, rounded to float32.
func expf(x float32) float32 {
	return float32(math.Exp(float64(x)))
}

// fma32 is a*b+c rounded once to float32, as VFMADD231PS computes it. The product is exact in
// float64; the sum's rounding error comes from TwoSum, and the sum is rounded to odd (an inexact
// result with an even last bit moves one unit towards the exact value), after which rounding to
// float32 is correct since float64 has more than 24+1 extra bits. Infinities and NaNs come out of
// the float64 sum as they do from the hardware (up to NaN payloads).
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b)
	s := p + float64(c)
	// The error matters only if s is a float32 midpoint (its low 29 bits 1000...0) or outside the
	// float32 normal range, where the midpoints have other bit patterns; otherwise s and the exact
	// sum round to the same float32.
	if bits := math.Float64bits(s); bits&(1<<29-1) == 1<<28 || bits>>52&0x7ff-(1023-126) >= 254 {
		return fma32Odd(p, s, float64(c))
	}
	return float32(s)
}

// fma32Odd rounds the float64 sum s = p+c to odd with its TwoSum error, then to float32: the rare
// case, kept out of line.
//
//go:noinline
func fma32Odd(p, s, c float64) float32 {
	if s-s != 0 { // infinite or NaN: exact already
		return float32(s)
	}
	bb := s - p
	err := (p - (s - bb)) + (c - bb)
	if bits := math.Float64bits(s); err != 0 && bits&1 == 0 {
		if (err > 0) == (s > 0) {
			bits++
		} else {
			bits--
		}
		s = math.Float64frombits(bits)
	}
	return float32(s)
}

// f16Table holds f16ToF32 of every half: the Go versions look halves up, as ggml does without F16C.
var f16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = f16ToF32(uint16(h))
	}
	return &t
}()

// f16ToF32 converts the half h exactly, as VCVTPH2PS does: subnormals are normalised, a NaN keeps
// its sign and payload and becomes quiet.
func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f && mant != 0:
		return math.Float32frombits(sign | 0x7fc00000 | mant<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: mant * 2^-24, exact in float32.
	f := float32(mant) * 0x1p-24
	return math.Float32frombits(sign | math.Float32bits(f))
}

// f32ToF16 rounds f to the nearest half (ties to even), as VCVTPS2PH with immediate 0: too large
// gives infinity, too small a subnormal or signed zero, a NaN keeps its sign and the top of its
// payload and becomes quiet.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 { // below half the smallest subnormal: zero
			return sign
		}
		m := mant | 0x800000
		shift := uint(14 - e)
		q := m >> shift
		rem, half := m&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > half || rem == half && q&1 == 1 {
			q++ // may carry into the smallest normal, which is its encoding
		}
		return sign | uint16(q)
	}
	q := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && q&1 == 1 {
		q++ // may carry into the exponent, up to infinity, which is its encoding
	}
	return sign | uint16(q)
}
