package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestF16ToF32Known(t *testing.T) {
	cases := []struct {
		h    uint16
		want float32
	}{
		{0x0000, 0},
		{0x3c00, 1},
		{0xc000, -2},
		{0x3800, 0.5},
		{0x3555, 0.333251953125},       // 1/3 rounded
		{0x2e66, 0.0999755859375},      // 0.1 rounded
		{0x3c01, 1 + 0x1p-10},          // one ulp above one
		{0x3bff, 1 - 0x1p-11},          // one ulp below one
		{0x6801, 2050},                 // above 2^11 the ulp is 2
		{0x7bff, 65504},                // largest finite
		{0xfbff, -65504},               // most negative finite
		{0x0400, 0x1p-14},              // smallest normal
		{0x03ff, 1023 * 0x1p-24},       // largest subnormal
		{0x0200, 0x1p-15},              // subnormal power of two
		{0x02aa, 682 * 0x1p-24},        // subnormal pattern
		{0x0001, 0x1p-24},              // smallest subnormal
		{0x8003, -3 * 0x1p-24},         // negative subnormal
		{0x7c00, float32(math.Inf(1))}, // +inf
		{0xfc00, float32(math.Inf(-1))},
	}
	for _, c := range cases {
		if got := F16ToF32(c.h); got != c.want {
			t.Errorf("F16ToF32(%#04x) = %g, want %g", c.h, got, c.want)
		}
	}
	if b := math.Float32bits(F16ToF32(0x8000)); b != 0x80000000 {
		t.Errorf("F16ToF32(0x8000) bits = %#08x, want negative zero", b)
	}
	for _, h := range []uint16{0x7e00, 0x7c01, 0xfe00, 0x7fff} {
		got := F16ToF32(h)
		if !math.IsNaN(float64(got)) {
			t.Errorf("F16ToF32(%#04x) = %g, want NaN", h, got)
		}
		if want := uint32(h&0x3ff) << 13; math.Float32bits(got)&0x7fffff != want {
			t.Errorf("F16ToF32(%#04x) payload %#x, want %#x", h, math.Float32bits(got)&0x7fffff, want)
		}
	}
}

func TestF32ToF16Known(t *testing.T) {
	inf := float32(math.Inf(1))
	cases := []struct {
		name string
		f    float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"minus two", -2, 0xc000},
		{"third", 1.0 / 3, 0x3555},
		{"max finite", 65504, 0x7bff},
		{"below overflow midpoint", 65519.996, 0x7bff},
		{"overflow midpoint rounds to even (inf)", 65520, 0x7c00},
		{"large", 1e6, 0x7c00},
		{"-inf", -inf, 0xfc00},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"smallest subnormal", 0x1p-24, 0x0001},
		{"half smallest subnormal ties to zero", 0x1p-25, 0x0000},
		{"just above half smallest subnormal", 0x1p-25 * (1 + 0x1p-20), 0x0001},
		{"1.5 ulps ties to even subnormal", 3 * 0x1p-25, 0x0002},
		{"tiny", 0x1p-40, 0x0000},
		{"negative tiny", -0x1p-40, 0x8000},
		{"largest subnormal", 1023 * 0x1p-24, 0x03ff},
		{"subnormal tie carries to smallest normal", 0x1p-14 - 0x1p-25, 0x0400},
		{"smallest normal", 0x1p-14, 0x0400},
		{"tie below odd ulp rounds down to even", 1 + 0x1p-11, 0x3c00},
		{"tie above odd ulp rounds up to even", 1 + 3*0x1p-11, 0x3c02},
		{"above tie rounds up", 1 + 0x1p-11 + 0x1p-20, 0x3c01},
		{"mantissa carry into exponent", 2 - 0x1p-12, 0x4000},
		{"float32 subnormal", math.Float32frombits(1), 0x0000},
	}
	for _, c := range cases {
		if got := F32ToF16(c.f); got != c.want {
			t.Errorf("%s: F32ToF16(%g) = %#04x, want %#04x", c.name, c.f, got, c.want)
		}
	}
	for _, bits := range []uint32{0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff} {
		h := F32ToF16(math.Float32frombits(bits))
		if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
			t.Errorf("F32ToF16(NaN %#08x) = %#04x, want a NaN", bits, h)
		}
		if h>>15 != uint16(bits>>31) {
			t.Errorf("F32ToF16(NaN %#08x) = %#04x lost the sign", bits, h)
		}
	}
}

func TestF16RoundTripAllHalves(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := F16ToF32(h)
		got := F32ToF16(f)
		if math.IsNaN(float64(f)) {
			if F16ToF32(got) == F16ToF32(got) {
				t.Fatalf("NaN %#04x came back as %#04x", h, got)
			}
			continue
		}
		if got != h {
			t.Fatalf("F32ToF16(F16ToF32(%#04x)=%g) = %#04x", h, f, got)
		}
	}
}

// TestF32ToF16Nearest checks random float32 values against the definition: the result is the
// nearest half, ties to the one with an even mantissa.
func TestF32ToF16Nearest(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		// Exponents from far below the subnormals to just past the largest half.
		f := math.Float32frombits(r.Uint32()&0x807fffff | uint32(90+r.IntN(55))<<23)
		h := F32ToF16(f)
		got := float64(F16ToF32(h))
		x := float64(f)
		if math.IsInf(got, 0) {
			if math.Abs(x) < 65520 {
				t.Fatalf("F32ToF16(%g) overflowed", f)
			}
			continue
		}
		err := math.Abs(got - x)
		for _, n := range []uint16{h - 1, h + 1} {
			if n&0x7fff > 0x7bff || (n^h)&0x8000 != 0 {
				continue
			}
			alt := math.Abs(float64(F16ToF32(n)) - x)
			if alt < err || alt == err && h&1 == 1 {
				t.Fatalf("F32ToF16(%g) = %#04x (%g), but %#04x (%g) is nearer or the even tie",
					f, h, got, n, F16ToF32(n))
			}
		}
	}
}

func TestBF16(t *testing.T) {
	cases := []struct {
		name string
		bits uint32
		want uint16
	}{
		{"one", 0x3f800000, 0x3f80},
		{"tie below even stays", 0x3f808000, 0x3f80},
		{"tie below odd rounds up", 0x3f818000, 0x3f82},
		{"above tie rounds up", 0x3f808001, 0x3f81},
		{"below tie rounds down", 0x3f807fff, 0x3f80},
		{"max float32 overflows to inf", 0x7f7fffff, 0x7f80},
		{"inf", 0x7f800000, 0x7f80},
		{"-inf", 0xff800000, 0xff80},
		{"subnormal kept", 0x00010000, 0x0001},
		{"subnormal rounded", 0x00018000, 0x0002},
		{"negative zero", 0x80000000, 0x8000},
	}
	for _, c := range cases {
		if got := F32ToBF16(math.Float32frombits(c.bits)); got != c.want {
			t.Errorf("%s: F32ToBF16(%#08x) = %#04x, want %#04x", c.name, c.bits, got, c.want)
		}
	}
	// A NaN whose payload lives only in the low bits must not truncate to infinity.
	for _, bits := range []uint32{0x7f800001, 0xff800001, 0x7fc00000} {
		h := F32ToBF16(math.Float32frombits(bits))
		if f := BF16ToF32(h); !math.IsNaN(float64(f)) {
			t.Errorf("F32ToBF16(NaN %#08x) = %#04x, not NaN", bits, h)
		}
	}
	for i := range 1 << 16 {
		b := uint16(i)
		f := BF16ToF32(b)
		if math.Float32bits(f) != uint32(b)<<16 {
			t.Fatalf("BF16ToF32(%#04x) = %#08x", b, math.Float32bits(f))
		}
		if !math.IsNaN(float64(f)) && F32ToBF16(f) != b {
			t.Fatalf("F32ToBF16(BF16ToF32(%#04x)) = %#04x", b, F32ToBF16(f))
		}
	}
}
