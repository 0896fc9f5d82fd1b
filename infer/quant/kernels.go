package quant

import (
	"encoding/binary"
	"math"
)

// dotFunc dots one weight row (whole blocks, as stored in the file) against one vector prepared in
// the row type's format with the row's length. Callers have checked both.
type dotFunc func(row []byte, x vec) float32

// matFunc computes dst[v*ldd+r] = dot(row r, vector v) for every row r of rows (rowBytes each, one
// after another) and every vector v of a. Callers have checked the shapes.
//
// Every matFunc must be batch invariant: the bits of dst[v*ldd+r] depend only on row r and vector
// v, never on how many rows or vectors the call covers or where its range starts. The engine's
// promise that a request's tokens do not depend on what else is in the batch rests on this.
type matFunc func(dst []float32, ldd int, rows []byte, rowBytes int, a *Activation)

// dotKernels and matKernels are the dispatch tables behind MatMulRows and DotRow, indexed by weight
// type. They start with the plain Go kernels; an architecture-specific file may replace entries at
// init after checking CPU features. The Go kernels stay as the oracle the tests hold every installed
// kernel to. A nil matKernels entry loops dotKernels over rows and vectors.
var matKernels [BF16 + 1]matFunc

var dotKernels = [BF16 + 1]dotFunc{
	F32:  dotF32Go,
	F16:  dotF16Go,
	BF16: dotBF16Go,
	Q8_0: dotQ8_0Go,
	Q4_0: dotQ4_0Go,
	Q4_K: dotQ4KGo,
	Q6_K: dotQ6KGo,
}

func dotF32Go(row []byte, a vec) float32 {
	x := a.f32
	var s0, s1, s2, s3 float32
	for len(x) >= 4 && len(row) >= 16 {
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(row[0:])) * x[0]
		s1 += math.Float32frombits(binary.LittleEndian.Uint32(row[4:])) * x[1]
		s2 += math.Float32frombits(binary.LittleEndian.Uint32(row[8:])) * x[2]
		s3 += math.Float32frombits(binary.LittleEndian.Uint32(row[12:])) * x[3]
		x, row = x[4:], row[16:]
	}
	for i, v := range x {
		s0 += math.Float32frombits(binary.LittleEndian.Uint32(row[4*i:])) * v
	}
	return (s0 + s1) + (s2 + s3)
}

func dotF16Go(row []byte, a vec) float32 {
	x := a.f32
	var s0, s1, s2, s3 float32
	for len(x) >= 4 && len(row) >= 8 {
		s0 += f16Table[binary.LittleEndian.Uint16(row[0:])] * x[0]
		s1 += f16Table[binary.LittleEndian.Uint16(row[2:])] * x[1]
		s2 += f16Table[binary.LittleEndian.Uint16(row[4:])] * x[2]
		s3 += f16Table[binary.LittleEndian.Uint16(row[6:])] * x[3]
		x, row = x[4:], row[8:]
	}
	for i, v := range x {
		s0 += f16Table[binary.LittleEndian.Uint16(row[2*i:])] * v
	}
	return (s0 + s1) + (s2 + s3)
}

func dotBF16Go(row []byte, a vec) float32 {
	x := a.f32
	var s0, s1, s2, s3 float32
	for len(x) >= 4 && len(row) >= 8 {
		s0 += BF16ToF32(binary.LittleEndian.Uint16(row[0:])) * x[0]
		s1 += BF16ToF32(binary.LittleEndian.Uint16(row[2:])) * x[1]
		s2 += BF16ToF32(binary.LittleEndian.Uint16(row[4:])) * x[2]
		s3 += BF16ToF32(binary.LittleEndian.Uint16(row[6:])) * x[3]
		x, row = x[4:], row[8:]
	}
	for i, v := range x {
		s0 += BF16ToF32(binary.LittleEndian.Uint16(row[2*i:])) * v
	}
	return (s0 + s1) + (s2 + s3)
}

// dotQ8_0Go is ggml's ggml_vec_dot_q8_0_q8_0: an exact integer dot per block, scaled by both scales.
// Array pointers give the compiler constant bounds, so the unrolled body has no checks.
func dotQ8_0Go(row []byte, a vec) float32 {
	var sum float32
	for b, dy := range a.d {
		blk := (*[q8_0Bytes]byte)(row[b*q8_0Bytes:])
		y := (*[qk0]int8)(a.qs[b*qk0:])
		var s0, s1 int32
		for j := 0; j < qk0; j += 8 {
			q := (*[8]byte)(blk[2+j:])
			s0 += int32(int8(q[0]))*int32(y[j]) + int32(int8(q[1]))*int32(y[j+1]) +
				int32(int8(q[2]))*int32(y[j+2]) + int32(int8(q[3]))*int32(y[j+3])
			s1 += int32(int8(q[4]))*int32(y[j+4]) + int32(int8(q[5]))*int32(y[j+5]) +
				int32(int8(q[6]))*int32(y[j+6]) + int32(int8(q[7]))*int32(y[j+7])
		}
		sum += float32(s0+s1) * (f16Table[binary.LittleEndian.Uint16(blk[:])] * dy)
	}
	return sum
}

// dotQ4_0Go is ggml's ggml_vec_dot_q4_0_q8_0.
func dotQ4_0Go(row []byte, a vec) float32 {
	var sum float32
	for b, dy := range a.d {
		blk := row[b*q4_0Bytes : b*q4_0Bytes+q4_0Bytes]
		q := (*[qk0 / 2]byte)(blk[2:])
		y := (*[qk0]int8)(a.qs[b*qk0:])
		var s0, s1 int32
		for j := 0; j < qk0/2; j += 4 {
			s0 += (int32(q[j]&0xf)-8)*int32(y[j]) + (int32(q[j+1]&0xf)-8)*int32(y[j+1]) +
				(int32(q[j+2]&0xf)-8)*int32(y[j+2]) + (int32(q[j+3]&0xf)-8)*int32(y[j+3])
			s1 += (int32(q[j]>>4)-8)*int32(y[j+16]) + (int32(q[j+1]>>4)-8)*int32(y[j+17]) +
				(int32(q[j+2]>>4)-8)*int32(y[j+18]) + (int32(q[j+3]>>4)-8)*int32(y[j+19])
		}
		sum += float32(s0+s1) * (f16Table[binary.LittleEndian.Uint16(blk)] * dy)
	}
	return sum
}

// dotQ4KGo is ggml's ggml_vec_dot_q4_K_q8_K: per block, the scaled integer dot of the 4-bit quants,
// minus dmin times the mins dotted with the activation's per-16 sums (so mins cost 16 multiplies a
// block instead of 256).
func dotQ4KGo(row []byte, a vec) float32 {
	var sum float32
	for b, dy := range a.d {
		blk := row[b*q4KBytes : b*q4KBytes+q4KBytes]
		d := f16Table[binary.LittleEndian.Uint16(blk)] * dy
		dmin := f16Table[binary.LittleEndian.Uint16(blk[2:])] * dy
		sc, m := unpackScalesK4((*[12]byte)(blk[4:16]))
		bs := a.bsums[b*16 : b*16+16]
		var summs int32
		for j := range 8 {
			summs += int32(m[j]) * (int32(bs[2*j]) + int32(bs[2*j+1]))
		}
		qs := blk[16:q4KBytes]
		y := a.qs[b*qkK : b*qkK+qkK]
		var isum int32
		for i := range 4 {
			q := qs[32*i : 32*i+32]
			ylo, yhi := y[64*i:64*i+32], y[64*i+32:64*i+64]
			var s0, s1, s2, s3 int32
			for l := 0; l < 32; l += 2 {
				s0 += int32(q[l]&0xf) * int32(ylo[l])
				s1 += int32(q[l+1]&0xf) * int32(ylo[l+1])
				s2 += int32(q[l]>>4) * int32(yhi[l])
				s3 += int32(q[l+1]>>4) * int32(yhi[l+1])
			}
			isum += int32(sc[2*i])*(s0+s1) + int32(sc[2*i+1])*(s2+s3)
		}
		sum += d*float32(isum) - dmin*float32(summs)
	}
	return sum
}

// dotQ6KGo is ggml's ggml_vec_dot_q6_K_q8_K. The -32 offset of every quant is applied per group of
// 16 through the activation's sums: sum((q-32)*y) = sum(q*y) - 32*bsum.
func dotQ6KGo(row []byte, a vec) float32 {
	var sum float32
	for b, dy := range a.d {
		blk := row[b*q6KBytes : b*q6KBytes+q6KBytes]
		y := a.qs[b*qkK : b*qkK+qkK]
		bs := a.bsums[b*16 : b*16+16]
		var isum int32
		for h := range 2 {
			ql := blk[64*h : 64*h+64]
			qh := blk[q6KQh+32*h : q6KQh+32*h+32]
			sc := blk[q6KScales+8*h : q6KScales+8*h+8]
			yh := y[128*h : 128*h+128]
			for half := range 2 {
				var s1, s2, s3, s4 int32
				for l := 16 * half; l < 16*half+16; l++ {
					hb := qh[l]
					s1 += int32(ql[l]&0xf|(hb&3)<<4) * int32(yh[l])
					s2 += int32(ql[l+32]&0xf|(hb>>2&3)<<4) * int32(yh[l+32])
					s3 += int32(ql[l]>>4|(hb>>4&3)<<4) * int32(yh[l+64])
					s4 += int32(ql[l+32]>>4|(hb>>6&3)<<4) * int32(yh[l+96])
				}
				// Scale g of this half covers elements 32g + 16*half ... + 15, whose sum is bsums[8h + 2g + half].
				g := bs[8*h+half:]
				isum += int32(int8(sc[half])) * (s1 - 32*int32(g[0]))
				isum += int32(int8(sc[half+2])) * (s2 - 32*int32(g[2]))
				isum += int32(int8(sc[half+4])) * (s3 - 32*int32(g[4]))
				isum += int32(int8(sc[half+6])) * (s4 - 32*int32(g[6]))
			}
		}
		sum += f16Table[binary.LittleEndian.Uint16(blk[q6KD:])] * dy * float32(isum)
	}
	return sum
}

// matGeneric is the matFunc of any dotFunc: each row is dotted against every vector while it is hot
// in cache, so the weights are read from memory once for the whole batch.
func matGeneric(dot dotFunc, dst []float32, ldd int, rows []byte, rowBytes int, a *Activation) {
	for r := 0; r*rowBytes < len(rows); r++ {
		row := rows[r*rowBytes : (r+1)*rowBytes]
		for v := range a.count {
			dst[v*ldd+r] = dot(row, a.vector(v))
		}
	}
}
