package quant

import "math"

// f16Table maps every half-precision bit pattern to its float32 value. Kernels convert one or more
// halves per block, and a 256 KiB table lookup beats the branchy conversion (ggml does the same).
var f16Table = func() *[1 << 16]float32 {
	var t [1 << 16]float32
	for h := range t {
		t[h] = math.Float32frombits(f16Bits(uint16(h)))
	}
	return &t
}()

// F16ToF32 converts an IEEE 754 half-precision value to float32. Every half is exactly representable,
// including subnormals; infinities keep their sign and NaNs keep their payload.
func F16ToF32(h uint16) float32 {
	return f16Table[h]
}

// f16Bits returns the float32 bit pattern of the half h.
func f16Bits(h uint16) uint32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return sign | 0x7f800000 | mant<<13
	case exp != 0:
		return sign | (exp+127-15)<<23 | mant<<13
	case mant == 0:
		return sign
	}
	// Subnormal half (mant * 2^-24): shift until the leading one becomes the implicit bit.
	e := uint32(127 - 14)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return sign | e<<23 | (mant&0x3ff)<<13
}

// F32ToF16 converts f to half precision, rounding to nearest with ties to even. Values too large
// become infinity, values too small become subnormals or signed zero, and NaNs stay NaN (quiet).
func F32ToF16(f float32) uint16 {
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
		if e < -10 { // below half the smallest subnormal (2^-25): rounds to zero
			return sign
		}
		m := mant | 0x800000
		shift := uint(14 - e)
		q := m >> shift
		rem, half := m&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > half || rem == half && q&1 == 1 {
			q++ // may carry into the smallest normal, which is the right encoding
		}
		return sign | uint16(q)
	}
	q := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && q&1 == 1 {
		q++ // may carry into the exponent, up to infinity, which is the right encoding
	}
	return sign | uint16(q)
}

// BF16ToF32 converts a bfloat16 value to float32 exactly.
func BF16ToF32(b uint16) float32 {
	return math.Float32frombits(uint32(b) << 16)
}

// F32ToBF16 converts f to bfloat16, rounding to nearest with ties to even, as ggml does; NaNs are
// kept NaN by forcing the quiet bit, since truncating the payload could otherwise make infinity.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}
