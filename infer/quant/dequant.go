package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Dequantize converts len(dst) elements of type t stored in src to float32. src must hold exactly
// those elements.
func Dequantize(t Type, dst []float32, src []byte) error {
	want, err := RowBytes(t, len(dst))
	if err != nil {
		return fmt.Errorf("dequantize: %w", err)
	}
	if len(src) != want {
		return fmt.Errorf("dequantize: %d elements of %s take %d bytes, got %d", len(dst), t, want, len(src))
	}
	dequantizeRow(t, dst, src)
	return nil
}

// dequantizeRow converts src to dst; t is supported and the lengths agree.
func dequantizeRow(t Type, dst []float32, src []byte) {
	switch t {
	case F32:
		dequantF32(dst, src)
	case F16:
		dequantF16(dst, src)
	case BF16:
		dequantBF16(dst, src)
	case Q8_0:
		dequantQ8_0(dst, src)
	case Q4_0:
		dequantQ4_0(dst, src)
	case Q4_K:
		dequantQ4K(dst, src)
	case Q6_K:
		dequantQ6K(dst, src)
	}
}

func dequantF32(dst []float32, src []byte) {
	src = src[:4*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func dequantF16(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = f16Table[binary.LittleEndian.Uint16(src[2*i:])]
	}
}

func dequantBF16(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
}

// dequantQ8_0: w = d*q.
func dequantQ8_0(dst []float32, src []byte) {
	for len(dst) >= qk0 && len(src) >= q8_0Bytes {
		d := f16Table[binary.LittleEndian.Uint16(src)]
		q := src[2:q8_0Bytes]
		y := dst[:qk0]
		for j := range y {
			y[j] = float32(int8(q[j])) * d
		}
		dst, src = dst[qk0:], src[q8_0Bytes:]
	}
}

// dequantQ4_0: element j is the low nibble of qs[j], element j+16 the high nibble; w = d*(q-8).
func dequantQ4_0(dst []float32, src []byte) {
	for len(dst) >= qk0 && len(src) >= q4_0Bytes {
		d := f16Table[binary.LittleEndian.Uint16(src)]
		q := src[2:q4_0Bytes]
		lo, hi := dst[:qk0/2], dst[qk0/2:qk0]
		for j := range lo {
			lo[j] = float32(int(q[j]&0xf)-8) * d
			hi[j] = float32(int(q[j]>>4)-8) * d
		}
		dst, src = dst[qk0:], src[q4_0Bytes:]
	}
}

// scaleMinK4 unpacks the 6-bit scale and min of sub-block j (0..7) from a Q4_K scales field
// (ggml's get_scale_min_k4): sub-blocks 0-3 keep theirs in the low six bits of bytes j and j+4;
// sub-blocks 4-7 keep the low four bits in byte j+4 and the high two in the top bits of bytes j-4 and j.
func scaleMinK4(j int, s *[12]byte) (sc, m uint8) {
	if j < 4 {
		return s[j] & 63, s[j+4] & 63
	}
	return s[j+4]&0xf | s[j-4]>>6<<4, s[j+4]>>4 | s[j]>>6<<4
}

// unpackScalesK4 returns all eight scales and mins of a Q4_K block.
func unpackScalesK4(s *[12]byte) (sc, m [8]uint8) {
	for j := range 8 {
		sc[j], m[j] = scaleMinK4(j, s)
	}
	return sc, m
}

// dequantQ4K: each 64 elements share 32 bytes of qs; the first 32 take the low nibbles with
// sub-block scale 2i, the next 32 the high nibbles with scale 2i+1; w = d*sc*q - dmin*m.
func dequantQ4K(dst []float32, src []byte) {
	for len(dst) >= qkK && len(src) >= q4KBytes {
		d := f16Table[binary.LittleEndian.Uint16(src)]
		dmin := f16Table[binary.LittleEndian.Uint16(src[2:])]
		sc, m := unpackScalesK4((*[12]byte)(src[4:16]))
		qs := src[16:q4KBytes]
		for i := range 4 {
			q := qs[32*i : 32*i+32]
			d1, m1 := d*float32(sc[2*i]), dmin*float32(m[2*i])
			d2, m2 := d*float32(sc[2*i+1]), dmin*float32(m[2*i+1])
			lo, hi := dst[64*i:64*i+32], dst[64*i+32:64*i+64]
			for l := range lo {
				lo[l] = d1*float32(q[l]&0xf) - m1
				hi[l] = d2*float32(q[l]>>4) - m2
			}
		}
		dst, src = dst[qkK:], src[q4KBytes:]
	}
}

// Q6_K block layout: ql[128] (low four bits), qh[64] (high two bits), int8 scales[16], fp16 d.
const (
	q6KQh     = qkK / 2
	q6KScales = q6KQh + qkK/4
	q6KD      = q6KScales + qkK/16
)

// dequantQ6K: each half of 128 elements uses 64 bytes of ql and 32 of qh. Element l+32g (g=0..3,
// l=0..31) takes nibble g>>1 of ql[l+32(g&1)] and bits 2g..2g+1 of qh[l], with scale 2g + l/16;
// w = d*scale*(q-32).
func dequantQ6K(dst []float32, src []byte) {
	for len(dst) >= qkK && len(src) >= q6KBytes {
		d := f16Table[binary.LittleEndian.Uint16(src[q6KD:])]
		for h := range 2 {
			ql := src[64*h : 64*h+64]
			qh := src[q6KQh+32*h : q6KQh+32*h+32]
			sc := src[q6KScales+8*h : q6KScales+8*h+8]
			y := dst[128*h : 128*h+128]
			for l := range 32 {
				is := l / 16
				q1 := int(ql[l]&0xf|(qh[l]>>0&3)<<4) - 32
				q2 := int(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
				q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
				q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
				y[l] = d * float32(int8(sc[is])) * float32(q1)
				y[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
				y[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
				y[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
			}
		}
		dst, src = dst[qkK:], src[q6KBytes:]
	}
}
