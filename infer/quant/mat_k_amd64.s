#include "textflag.h"

// AVX2 kernels for Q4_K and Q6_K weights against Q8_K activations. Each (row, vector) result is
// ggml's AVX2 ggml_vec_dot_q4_K_q8_K / ggml_vec_dot_q6_K_q8_K: per super-block, the integer dot in
// eight int32 lanes partitioned as ggml's VPMADDUBSW / VPMADDWD partition it (lane l holds
// elements 4l..4l+3 of every 32), converted to float and added with one FMA scaled by
// d = y.d*fp16(w.d) into an eight-lane accumulator; for Q4_K also the mins against the pairwise
// sums of the activation's bsums, added with one FMA scaled by -y.d*fp16(w.dmin) into a four-lane
// accumulator; blocks in order; then ggml's horizontal sums. Integer lanes are exact, so only the
// float operations fix the bits, and every kernel and tile does the same ones per (row, vector):
// results do not depend on the rows or vectors computed with them.
//
// The Vec2 kernels take one vector and two rows at a time (the second row of an odd tail is the
// first again, its result dropped), and while they read a block of both rows they prefetch the same
// block of the next two: a lead of one row pair, which a fixed distance cannot give both short and
// long rows. The Tile kernels take one row at a time against groups of up to
// eight vectors, unpacking each 32 bytes of quants once for the whole group.
//
// Only VEX encodings are used and every kernel ends with VZEROUPPER: legacy SSE code after dirty
// upper halves costs a state transition.

DATA nib<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+8(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+16(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nib<>+24(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL nib<>(SB), RODATA|NOPTR, $32

DATA hi2<>+0(SB)/8, $0x3030303030303030
DATA hi2<>+8(SB)/8, $0x3030303030303030
DATA hi2<>+16(SB)/8, $0x3030303030303030
DATA hi2<>+24(SB)/8, $0x3030303030303030
GLOBL hi2<>(SB), RODATA|NOPTR, $32

DATA m32s<>+0(SB)/8, $0x2020202020202020
DATA m32s<>+8(SB)/8, $0x2020202020202020
DATA m32s<>+16(SB)/8, $0x2020202020202020
DATA m32s<>+24(SB)/8, $0x2020202020202020
GLOBL m32s<>(SB), RODATA|NOPTR, $32

DATA sign<>+0(SB)/8, $0x0000000080000000
DATA sign<>+8(SB)/8, $0x0000000000000000
GLOBL sign<>(SB), RODATA|NOPTR, $16

// k4shuf entry i (32 bytes) picks byte i of each 128-bit lane, zero-extended, into every 16-bit
// lane: Q4_K's scale i as a word from the eight scale bytes (ggml's get_scale_shuffle_k4 does the
// same from the scales already widened to words).
DATA k4shuf<>+0(SB)/8, $0x8000800080008000
DATA k4shuf<>+8(SB)/8, $0x8000800080008000
DATA k4shuf<>+16(SB)/8, $0x8000800080008000
DATA k4shuf<>+24(SB)/8, $0x8000800080008000
DATA k4shuf<>+32(SB)/8, $0x8001800180018001
DATA k4shuf<>+40(SB)/8, $0x8001800180018001
DATA k4shuf<>+48(SB)/8, $0x8001800180018001
DATA k4shuf<>+56(SB)/8, $0x8001800180018001
DATA k4shuf<>+64(SB)/8, $0x8002800280028002
DATA k4shuf<>+72(SB)/8, $0x8002800280028002
DATA k4shuf<>+80(SB)/8, $0x8002800280028002
DATA k4shuf<>+88(SB)/8, $0x8002800280028002
DATA k4shuf<>+96(SB)/8, $0x8003800380038003
DATA k4shuf<>+104(SB)/8, $0x8003800380038003
DATA k4shuf<>+112(SB)/8, $0x8003800380038003
DATA k4shuf<>+120(SB)/8, $0x8003800380038003
DATA k4shuf<>+128(SB)/8, $0x8004800480048004
DATA k4shuf<>+136(SB)/8, $0x8004800480048004
DATA k4shuf<>+144(SB)/8, $0x8004800480048004
DATA k4shuf<>+152(SB)/8, $0x8004800480048004
DATA k4shuf<>+160(SB)/8, $0x8005800580058005
DATA k4shuf<>+168(SB)/8, $0x8005800580058005
DATA k4shuf<>+176(SB)/8, $0x8005800580058005
DATA k4shuf<>+184(SB)/8, $0x8005800580058005
DATA k4shuf<>+192(SB)/8, $0x8006800680068006
DATA k4shuf<>+200(SB)/8, $0x8006800680068006
DATA k4shuf<>+208(SB)/8, $0x8006800680068006
DATA k4shuf<>+216(SB)/8, $0x8006800680068006
DATA k4shuf<>+224(SB)/8, $0x8007800780078007
DATA k4shuf<>+232(SB)/8, $0x8007800780078007
DATA k4shuf<>+240(SB)/8, $0x8007800780078007
DATA k4shuf<>+248(SB)/8, $0x8007800780078007
GLOBL k4shuf<>(SB), RODATA|NOPTR, $256

// k6shuf entry i (16 bytes) is ggml's get_scale_shuffle(i): Q6_K's scale 2i eight times, then
// scale 2i+1 eight times, before sign extension to words.
DATA k6shuf<>+0(SB)/8, $0x0000000000000000
DATA k6shuf<>+8(SB)/8, $0x0101010101010101
DATA k6shuf<>+16(SB)/8, $0x0202020202020202
DATA k6shuf<>+24(SB)/8, $0x0303030303030303
DATA k6shuf<>+32(SB)/8, $0x0404040404040404
DATA k6shuf<>+40(SB)/8, $0x0505050505050505
DATA k6shuf<>+48(SB)/8, $0x0606060606060606
DATA k6shuf<>+56(SB)/8, $0x0707070707070707
DATA k6shuf<>+64(SB)/8, $0x0808080808080808
DATA k6shuf<>+72(SB)/8, $0x0909090909090909
DATA k6shuf<>+80(SB)/8, $0x0a0a0a0a0a0a0a0a
DATA k6shuf<>+88(SB)/8, $0x0b0b0b0b0b0b0b0b
DATA k6shuf<>+96(SB)/8, $0x0c0c0c0c0c0c0c0c
DATA k6shuf<>+104(SB)/8, $0x0d0d0d0d0d0d0d0d
DATA k6shuf<>+112(SB)/8, $0x0e0e0e0e0e0e0e0e
DATA k6shuf<>+120(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL k6shuf<>(SB), RODATA|NOPTR, $128

// HSUM8 is ggml's hsum_float_8 of ya (whose low half is xa), left in xa.
#define HSUM8(ya, xa, t) \
	VEXTRACTF128 $1, ya, t; \
	VADDPS       t, xa, xa; \
	VMOVHLPS     xa, xa, t; \
	VADDPS       t, xa, xa; \
	VMOVSHDUP    xa, t; \
	VADDSS       t, xa, xa

// HSUM4M adds ggml's horizontal sum of Q4_K's four-lane xm to xa (hsum_float_8 + acc_m).
#define HSUM4M(xm, xa, t) \
	VMOVHLPS  xm, xm, t; \
	VADDPS    t, xm, xm; \
	VMOVSHDUP xm, t; \
	VADDSS    t, xm, xm; \
	VADDSS    xm, xa, xa

// Q4SCALES unpacks the 6-bit scales and mins of the Q4_K block at p as ggml's utmp does: the eight
// scale bytes into lo, the eight min bytes into hi (t1, t2 clobbered).
#define Q4SCALES(p, lo, hi, t1, t2) \
	MOVL 4(p), lo; \
	MOVL 8(p), hi; \
	MOVL lo, t1; \
	SHRL $2, t1; \
	ANDL $0x30303030, t1; \
	MOVL 12(p), t2; \
	ANDL $0x0f0f0f0f, t2; \
	ORL  t2, t1; \
	ANDL $0x3f3f3f3f, lo; \
	SHLQ $32, t1; \
	ORQ  t1, lo; \
	MOVL hi, t1; \
	SHRL $2, t1; \
	ANDL $0x30303030, t1; \
	MOVL 12(p), t2; \
	SHRL $4, t2; \
	ANDL $0x0f0f0f0f, t2; \
	ORL  t2, t1; \
	ANDL $0x3f3f3f3f, hi; \
	SHLQ $32, t1; \
	ORQ  t1, hi

// Q6U0..Q6U3 build in q the 6-bit quants of chunk k = 0..3 of a Q6_K half from its low bits b1
// (ql[0:32]), b2 (ql[32:64]) and high bits h (qh[0:32]): ggml's (nibble) | (2 bits << 4), with the
// high bits shifted into place before one mask (m30 = 0x30 bytes) instead of masked then shifted.
#define Q6U0(b1, b2, h, q, t, m4, m30) \
	VPSLLW $4, h, q; \
	VPAND  m30, q, q; \
	VPAND  m4, b1, t; \
	VPOR   t, q, q

#define Q6U1(b1, b2, h, q, t, m4, m30) \
	VPSLLW $2, h, q; \
	VPAND  m30, q, q; \
	VPAND  m4, b2, t; \
	VPOR   t, q, q

#define Q6U2(b1, b2, h, q, t, m4, m30) \
	VPAND  m30, h, q; \
	VPSRLW $4, b1, t; \
	VPAND  m4, t, t; \
	VPOR   t, q, q

#define Q6U3(b1, b2, h, q, t, m4, m30) \
	VPSRLW $2, h, q; \
	VPAND  m30, q, q; \
	VPSRLW $4, b2, t; \
	VPAND  m4, t, t; \
	VPOR   t, q, q

// Q4ROW adds one row's part of a Vec2 step to sum: its 32 bytes of quants at w, low nibbles against
// the vector's quants in Y2 with scale word mlo of the scale bytes sc, high nibbles against Y3 with mhi.
#define Q4ROW(w, sc, sum, mlo, mhi) \
	VMOVDQU    w, Y11; \
	VPSRLW     $4, Y11, Y12; \
	VPAND      Y10, Y11, Y11; \
	VPAND      Y10, Y12, Y12; \
	VPMADDUBSW Y2, Y11, Y11; \
	VPMADDUBSW Y3, Y12, Y12; \
	VPSHUFB    mlo, sc, Y13; \
	VPMADDWD   Y13, Y11, Y11; \
	VPSHUFB    mhi, sc, Y13; \
	VPMADDWD   Y13, Y12, Y12; \
	VPADDD     Y11, sum, sum; \
	VPADDD     Y12, sum, sum

// Q4STEP is ggml's step j: 32 bytes of quants per row, low nibbles against the vector's 32 quants at
// 64j with scale 2j, high nibbles against the next 32 with scale 2j+1.
#define Q4STEP(y, w, mlo, mhi) \
	VMOVDQU y(R8), Y2; \
	VMOVDQU y+32(R8), Y3; \
	Q4ROW(w(SI), Y0, Y4, mlo, mhi); \
	Q4ROW(w(R14), Y1, Y5, mlo, mhi)

// Q4V adds one vector's part of a step to its integer sums s: the vector's 64 quants at lo and hi
// against the row's low nibbles Y1 (scale words Y3) and high nibbles Y2 (scale words Y4).
#define Q4V(lo, hi, s) \
	VPMADDUBSW lo, Y1, Y5; \
	VPMADDWD   Y3, Y5, Y5; \
	VPMADDUBSW hi, Y2, Y6; \
	VPMADDWD   Y4, Y6, Y6; \
	VPADDD     Y5, s, s; \
	VPADDD     Y6, s, s

// Q4F closes one vector's block: acc += d*float(s) with d = y.d*fp16(w.d) (X1 lane 0 = fp16(w.d)),
// acc_m += dmin*float(mins·q8s) with dmin = y.d*-fp16(w.dmin) (X2), mins words in X3. CX, DX, DI
// point at the vector's scale, bsums and accumulators, and step to the next vector.
#define Q4F(s) \
	VMOVSS       (CX), X4; \
	VMULSS       X1, X4, X5; \
	VBROADCASTSS X5, Y5; \
	VCVTDQ2PS    s, s; \
	VFMADD213PS  (DI), Y5, s; \
	VMOVUPS      s, (DI); \
	VMULSS       X2, X4, X4; \
	VBROADCASTSS X4, X4; \
	VMOVDQU      (DX), X5; \
	VPHADDW      16(DX), X5, X5; \
	VPMADDWD     X3, X5, X5; \
	VCVTDQ2PS    X5, X5; \
	VFMADD213PS  32(DI), X4, X5; \
	VMOVUPS      X5, 32(DI); \
	ADDQ         384(SP), CX; \
	ADDQ         392(SP), DX; \
	ADDQ         $48, DI

// Q6ROW finishes one row's chunk from its quants in Y14: times the vector's quants at y, minus q8s,
// times the chunk's two scales (sc the row's scales, mask picks them), into sum.
#define Q6ROW(y, sc, mask, sum) \
	VPMADDUBSW y, Y14, Y14; \
	VPSUBW     Y13, Y14, Y14; \
	VMOVDQU    sc, X15; \
	VPSHUFB    mask, X15, X15; \
	VPMOVSXBW  X15, Y15; \
	VPMADDWD   Y15, Y14, Y14; \
	VPADDD     Y14, sum, sum

// Q6CHUNK is ggml's chunk k of half j for both rows: the vector's quants at y, scale pair 4j+k.
#define Q6CHUNK(U, y, mask) \
	VPMADDUBSW y(R8), Y2, Y13; \
	U(Y7, Y8, Y9, Y14, Y15, Y0, Y1); \
	Q6ROW(y(R8), 192(SI), mask, Y3); \
	U(Y10, Y11, Y12, Y14, Y15, Y0, Y1); \
	Q6ROW(y(R8), 192(R14), mask, Y4)

// Q6V adds one vector's part of a chunk to its integer sums s: the row's quants Y0 times the
// vector's quants at y, minus 32 times their pairs (Y2 = 32s), times the scale words Y1.
#define Q6V(y, s) \
	VPMADDUBSW y, Y0, Y3; \
	VPMADDUBSW y, Y2, Y4; \
	VPSUBW     Y4, Y3, Y3; \
	VPMADDWD   Y1, Y3, Y3; \
	VPADDD     Y3, s, s

// Q6SCALE puts scale pair i of the row (SI) into Y1 as words; CX points at k6shuf entry 4j.
#define Q6SCALE(i) \
	VMOVDQU   192(SI), X1; \
	VPSHUFB   i*16(CX), X1, X1; \
	VPMOVSXBW X1, Y1

// Q6VS runs Q6V for the group's vectors at offset y into the current half, leaving for done once
// R12 vectors are done.
#define Q6VS(y, done) \
	Q6V(y(R8), Y8); \
	CMPQ R12, $1; \
	JEQ  done; \
	Q6V(y(R8)(R10*1), Y9); \
	CMPQ R12, $2; \
	JEQ  done; \
	Q6V(y(R8)(R10*2), Y10); \
	CMPQ R12, $3; \
	JEQ  done; \
	Q6V(y(R8)(R11*1), Y11); \
	CMPQ R12, $4; \
	JEQ  done; \
	Q6V(y(R9), Y12); \
	CMPQ R12, $5; \
	JEQ  done; \
	Q6V(y(R9)(R10*1), Y13); \
	CMPQ R12, $6; \
	JEQ  done; \
	Q6V(y(R9)(R10*2), Y14); \
	CMPQ R12, $7; \
	JEQ  done; \
	Q6V(y(R9)(R11*1), Y15)

// Q6F closes one vector's block: acc += d*float(s) with d = y.d*fp16(w.d) (X5). CX and DI point at
// the vector's scale and accumulator, and step to the next vector.
#define Q6F(s) \
	VMOVSS       (CX), X4; \
	VMULSS       X5, X4, X4; \
	VBROADCASTSS X4, Y4; \
	VCVTDQ2PS    s, s; \
	VFMADD213PS  (DI), Y4, s; \
	VMOVUPS      s, (DI); \
	ADDQ         256(SP), CX; \
	ADDQ         $32, DI

// func q4KVec2AVX2(dst *float32, rows *byte, rowBytes, nrows, nb int, qs *int8, d *float32, bsums *int16)
//
// Registers: SI, R14 the two rows' current blocks, R13 = rowBytes; R8, R9, R10 the vector's quants,
// scale, bsums; Y0/Y1 the rows' scale bytes, Y2/Y3 the vector's 64 quants of a step, Y4/Y5 the
// integer sums, Y6/Y7 and X8/X9 the accumulators, Y10 the nibble mask, Y14/Y15 the rows' block
// scales d.
TEXT ·q4KVec2AVX2(SB), NOSPLIT, $0-64
	MOVQ    dst+0(FP), DI
	MOVQ    rows+8(FP), SI
	MOVQ    nrows+24(FP), CX
	MOVQ    rowBytes+16(FP), R13
	VMOVDQU nib<>(SB), Y10

q4v2pair:
	CMPQ CX, $0
	JEQ  q4v2done
	MOVQ SI, R14
	CMPQ CX, $1
	JEQ  q4v2rows
	ADDQ rowBytes+16(FP), R14

q4v2rows:
	MOVQ  qs+40(FP), R8
	MOVQ  d+48(FP), R9
	MOVQ  bsums+56(FP), R10
	MOVQ  nb+32(FP), R11
	SHLQ  $2, R11
	ADDQ  R9, R11
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS X8, X8, X8
	VXORPS X9, X9, X9

q4v2block:
	PREFETCHT0 (R14)(R13*1)
	PREFETCHT0 64(R14)(R13*1)
	PREFETCHT0 128(R14)(R13*1)
	PREFETCHT0 (R14)(R13*2)
	PREFETCHT0 64(R14)(R13*2)
	PREFETCHT0 128(R14)(R13*2)

	// The vector's pairwise bsums (ggml's q8s) and scale, shared by both rows.
	VMOVDQU (R10), X11
	VPHADDW 16(R10), X11, X11
	VMOVSS  (R9), X12

	// Per row: scale bytes broadcast for the integer steps; the mins dotted with q8s and added to
	// acc_m with dmin = -y.d*fp16(w.dmin) (negating the product is exact); d = y.d*fp16(w.d).
	Q4SCALES(SI, AX, BX, DX, R12)
	VMOVQ        AX, X0
	VPBROADCASTQ X0, Y0
	VMOVQ        BX, X2
	VPMOVZXBW    X2, X2
	VPMADDWD     X11, X2, X2
	VCVTDQ2PS    X2, X2
	VMOVD        (SI), X14
	VCVTPH2PS    X14, X14
	VMOVSHDUP    X14, X3
	VMULSS       X3, X12, X3
	VXORPS       sign<>(SB), X3, X3
	VBROADCASTSS X3, X3
	VFMADD231PS  X3, X2, X8
	VMULSS       X14, X12, X14
	VBROADCASTSS X14, Y14

	Q4SCALES(R14, AX, BX, DX, R12)
	VMOVQ        AX, X1
	VPBROADCASTQ X1, Y1
	VMOVQ        BX, X2
	VPMOVZXBW    X2, X2
	VPMADDWD     X11, X2, X2
	VCVTDQ2PS    X2, X2
	VMOVD        (R14), X15
	VCVTPH2PS    X15, X15
	VMOVSHDUP    X15, X3
	VMULSS       X3, X12, X3
	VXORPS       sign<>(SB), X3, X3
	VBROADCASTSS X3, X3
	VFMADD231PS  X3, X2, X9
	VMULSS       X15, X12, X15
	VBROADCASTSS X15, Y15

	VPXOR Y4, Y4, Y4
	VPXOR Y5, Y5, Y5

	Q4STEP(0, 16, k4shuf<>+0(SB), k4shuf<>+32(SB))
	Q4STEP(64, 48, k4shuf<>+64(SB), k4shuf<>+96(SB))
	Q4STEP(128, 80, k4shuf<>+128(SB), k4shuf<>+160(SB))
	Q4STEP(192, 112, k4shuf<>+192(SB), k4shuf<>+224(SB))

	VCVTDQ2PS   Y4, Y4
	VFMADD231PS Y14, Y4, Y6
	VCVTDQ2PS   Y5, Y5
	VFMADD231PS Y15, Y5, Y7

	ADDQ $144, SI
	ADDQ $144, R14
	ADDQ $256, R8
	ADDQ $4, R9
	ADDQ $32, R10
	CMPQ R9, R11
	JNE  q4v2block

	HSUM8(Y6, X6, X2)
	HSUM4M(X8, X6, X2)
	VMOVSS X6, (DI)
	CMPQ   CX, $1
	JEQ    q4v2done
	HSUM8(Y7, X7, X2)
	HSUM4M(X9, X7, X2)
	VMOVSS X7, 4(DI)
	MOVQ   R14, SI
	ADDQ   $8, DI
	SUBQ   $2, CX
	JMP    q4v2pair

q4v2done:
	VZEROUPPER
	RET

// func q4KTileAVX2(dst *float32, ldd int, rows *byte, nrows, nb int, qs *int8, d *float32, bsums *int16, count int)
//
// Frame: 0-383 the accumulators of up to eight vectors (acc, then acc_m, 48 bytes each),
// 384 nb*4 and 392 nb*32 (strides of a.d and a.bsums between vectors), 400 the group's first vector,
// 408 rows left, 416 the group's output for the current row, 424/432/440 the group's first
// vector's quants, scales and bsums, 448 the end of its scales.
//
// Registers in the block loop: SI the row's block, R8 and R9 vector 0's and vector 4's quants,
// R10 = n and R11 = 3n (vector strides), R12 the group's vector count, R13/R14 vector 0's scale and
// bsums, BX the min bytes; Y0 the scale bytes, Y7 the nibble mask, Y8-Y15 the integer sums.
TEXT ·q4KTileAVX2(SB), NOSPLIT, $456-72
	MOVQ    nb+32(FP), AX
	MOVQ    AX, BX
	SHLQ    $2, BX
	MOVQ    BX, 384(SP)
	MOVQ    AX, BX
	SHLQ    $5, BX
	MOVQ    BX, 392(SP)
	SHLQ    $8, AX
	MOVQ    AX, R10
	LEAQ    (R10)(R10*2), R11
	VMOVDQU nib<>(SB), Y7
	MOVQ    $0, 400(SP)

q4tgroup:
	MOVQ    count+64(FP), R12
	SUBQ    400(SP), R12
	MOVQ    $8, AX
	CMPQ    R12, AX
	CMOVQGT AX, R12
	MOVQ    400(SP), AX
	MOVQ    AX, BX
	IMULQ   R10, BX
	ADDQ    qs+40(FP), BX
	MOVQ    BX, 424(SP)
	MOVQ    AX, BX
	IMULQ   384(SP), BX
	ADDQ    d+48(FP), BX
	MOVQ    BX, 432(SP)
	ADDQ    384(SP), BX
	MOVQ    BX, 448(SP)
	MOVQ    AX, BX
	IMULQ   392(SP), BX
	ADDQ    bsums+56(FP), BX
	MOVQ    BX, 440(SP)
	IMULQ   ldd+8(FP), AX
	SHLQ    $2, AX
	ADDQ    dst+0(FP), AX
	MOVQ    AX, 416(SP)
	MOVQ    rows+16(FP), SI
	MOVQ    nrows+24(FP), AX
	MOVQ    AX, 408(SP)

q4trow:
	VXORPS  Y1, Y1, Y1
	VMOVUPS Y1, 0(SP)
	VMOVUPS Y1, 32(SP)
	VMOVUPS Y1, 64(SP)
	VMOVUPS Y1, 96(SP)
	VMOVUPS Y1, 128(SP)
	VMOVUPS Y1, 160(SP)
	VMOVUPS Y1, 192(SP)
	VMOVUPS Y1, 224(SP)
	VMOVUPS Y1, 256(SP)
	VMOVUPS Y1, 288(SP)
	VMOVUPS Y1, 320(SP)
	VMOVUPS Y1, 352(SP)
	MOVQ    424(SP), R8
	LEAQ    (R8)(R10*4), R9
	MOVQ    432(SP), R13
	MOVQ    440(SP), R14

q4tblock:
	Q4SCALES(SI, AX, BX, CX, DX)
	VMOVQ        AX, X0
	VPBROADCASTQ X0, Y0
	VPXOR        Y8, Y8, Y8
	VPXOR        Y9, Y9, Y9
	VPXOR        Y10, Y10, Y10
	VPXOR        Y11, Y11, Y11
	VPXOR        Y12, Y12, Y12
	VPXOR        Y13, Y13, Y13
	VPXOR        Y14, Y14, Y14
	VPXOR        Y15, Y15, Y15
	LEAQ         k4shuf<>(SB), CX
	MOVQ         $4, AX
	ADDQ         $16, SI

q4tstep:
	VMOVDQU (SI), Y1
	VPSRLW  $4, Y1, Y2
	VPAND   Y7, Y1, Y1
	VPAND   Y7, Y2, Y2
	VPSHUFB (CX), Y0, Y3
	VPSHUFB 32(CX), Y0, Y4
	Q4V((R8), 32(R8), Y8)
	CMPQ    R12, $1
	JEQ     q4tnext
	Q4V((R8)(R10*1), 32(R8)(R10*1), Y9)
	CMPQ    R12, $2
	JEQ     q4tnext
	Q4V((R8)(R10*2), 32(R8)(R10*2), Y10)
	CMPQ    R12, $3
	JEQ     q4tnext
	Q4V((R8)(R11*1), 32(R8)(R11*1), Y11)
	CMPQ    R12, $4
	JEQ     q4tnext
	Q4V((R9), 32(R9), Y12)
	CMPQ    R12, $5
	JEQ     q4tnext
	Q4V((R9)(R10*1), 32(R9)(R10*1), Y13)
	CMPQ    R12, $6
	JEQ     q4tnext
	Q4V((R9)(R10*2), 32(R9)(R10*2), Y14)
	CMPQ    R12, $7
	JEQ     q4tnext
	Q4V((R9)(R11*1), 32(R9)(R11*1), Y15)

q4tnext:
	ADDQ $32, SI
	ADDQ $64, R8
	ADDQ $64, R9
	ADDQ $64, CX
	DECQ AX
	JNZ  q4tstep

	// SI is now the next block; this block's d and dmin are at -144(SI).
	VMOVD     -144(SI), X1
	VCVTPH2PS X1, X1
	VMOVSHDUP X1, X2
	VXORPS    sign<>(SB), X2, X2
	VMOVQ     BX, X3
	VPMOVZXBW X3, X3
	MOVQ      R13, CX
	MOVQ      R14, DX
	MOVQ      SP, DI
	Q4F(Y8)
	CMPQ      R12, $1
	JEQ       q4tclosed
	Q4F(Y9)
	CMPQ      R12, $2
	JEQ       q4tclosed
	Q4F(Y10)
	CMPQ      R12, $3
	JEQ       q4tclosed
	Q4F(Y11)
	CMPQ      R12, $4
	JEQ       q4tclosed
	Q4F(Y12)
	CMPQ      R12, $5
	JEQ       q4tclosed
	Q4F(Y13)
	CMPQ      R12, $6
	JEQ       q4tclosed
	Q4F(Y14)
	CMPQ      R12, $7
	JEQ       q4tclosed
	Q4F(Y15)

q4tclosed:
	ADDQ $4, R13
	ADDQ $32, R14
	CMPQ R13, 448(SP)
	JNE  q4tblock

	MOVQ 416(SP), DX
	MOVQ ldd+8(FP), CX
	SHLQ $2, CX
	MOVQ R12, AX
	MOVQ SP, DI

q4tout:
	VMOVUPS (DI), Y1
	VMOVUPS 32(DI), X2
	HSUM8(Y1, X1, X3)
	HSUM4M(X2, X1, X3)
	VMOVSS  X1, (DX)
	ADDQ    CX, DX
	ADDQ    $48, DI
	DECQ    AX
	JNZ     q4tout

	ADDQ $4, 416(SP)
	DECQ 408(SP)
	JNZ  q4trow

	ADDQ $8, 400(SP)
	MOVQ count+64(FP), AX
	CMPQ 400(SP), AX
	JLT  q4tgroup

	VZEROUPPER
	RET

// func q6KVec2AVX2(dst *float32, rows *byte, rowBytes, nrows, nb int, qs *int8, d *float32)
//
// Registers: SI, R14 the two rows' current blocks, R13 = rowBytes; R8, R9 the vector's quants and
// scale; Y0, Y1, Y2 the masks 0x0f, 0x30 and 32; Y3/Y4 the integer sums, Y5/Y6 the accumulators;
// Y7-Y9 and Y10-Y12 the rows' low bits (two registers) and high bits of a half; Y13 ggml's
// q8s = 32*(pairs of the vector's quants), shared by the rows.
TEXT ·q6KVec2AVX2(SB), NOSPLIT, $0-56
	MOVQ    dst+0(FP), DI
	MOVQ    rows+8(FP), SI
	MOVQ    nrows+24(FP), CX
	MOVQ    rowBytes+16(FP), R13
	VMOVDQU nib<>(SB), Y0
	VMOVDQU hi2<>(SB), Y1
	VMOVDQU m32s<>(SB), Y2

q6v2pair:
	CMPQ CX, $0
	JEQ  q6v2done
	MOVQ SI, R14
	CMPQ CX, $1
	JEQ  q6v2rows
	ADDQ rowBytes+16(FP), R14

q6v2rows:
	MOVQ   qs+40(FP), R8
	MOVQ   d+48(FP), R9
	MOVQ   nb+32(FP), R11
	SHLQ   $2, R11
	ADDQ   R9, R11
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6

q6v2block:
	PREFETCHT0 (R14)(R13*1)
	PREFETCHT0 64(R14)(R13*1)
	PREFETCHT0 128(R14)(R13*1)
	PREFETCHT0 192(R14)(R13*1)
	PREFETCHT0 (R14)(R13*2)
	PREFETCHT0 64(R14)(R13*2)
	PREFETCHT0 128(R14)(R13*2)
	PREFETCHT0 192(R14)(R13*2)
	VPXOR      Y3, Y3, Y3
	VPXOR      Y4, Y4, Y4

	VMOVDQU 0(SI), Y7
	VMOVDQU 32(SI), Y8
	VMOVDQU 128(SI), Y9
	VMOVDQU 0(R14), Y10
	VMOVDQU 32(R14), Y11
	VMOVDQU 128(R14), Y12
	Q6CHUNK(Q6U0, 0, k6shuf<>+0(SB))
	Q6CHUNK(Q6U1, 32, k6shuf<>+16(SB))
	Q6CHUNK(Q6U2, 64, k6shuf<>+32(SB))
	Q6CHUNK(Q6U3, 96, k6shuf<>+48(SB))

	VMOVDQU 64(SI), Y7
	VMOVDQU 96(SI), Y8
	VMOVDQU 160(SI), Y9
	VMOVDQU 64(R14), Y10
	VMOVDQU 96(R14), Y11
	VMOVDQU 160(R14), Y12
	Q6CHUNK(Q6U0, 128, k6shuf<>+64(SB))
	Q6CHUNK(Q6U1, 160, k6shuf<>+80(SB))
	Q6CHUNK(Q6U2, 192, k6shuf<>+96(SB))
	Q6CHUNK(Q6U3, 224, k6shuf<>+112(SB))

	// d = y.d*fp16(w.d); the fp16 is the block's last two bytes, loaded alone.
	VMOVSS       (R9), X13
	VPBROADCASTW 208(SI), X14
	VCVTPH2PS    X14, X14
	VMULSS       X14, X13, X14
	VBROADCASTSS X14, Y14
	VCVTDQ2PS    Y3, Y3
	VFMADD231PS  Y14, Y3, Y5
	VPBROADCASTW 208(R14), X15
	VCVTPH2PS    X15, X15
	VMULSS       X15, X13, X15
	VBROADCASTSS X15, Y15
	VCVTDQ2PS    Y4, Y4
	VFMADD231PS  Y15, Y4, Y6

	ADDQ $210, SI
	ADDQ $210, R14
	ADDQ $256, R8
	ADDQ $4, R9
	CMPQ R9, R11
	JNE  q6v2block

	HSUM8(Y5, X5, X14)
	VMOVSS X5, (DI)
	CMPQ   CX, $1
	JEQ    q6v2done
	HSUM8(Y6, X6, X14)
	VMOVSS X6, 4(DI)
	MOVQ   R14, SI
	ADDQ   $8, DI
	SUBQ   $2, CX
	JMP    q6v2pair

q6v2done:
	VZEROUPPER
	RET

// func q6KTileAVX2(dst *float32, ldd int, rows *byte, nrows, nb int, qs *int8, d *float32, count int)
//
// Frame: 0-255 the accumulators of up to eight vectors, 256 nb*4 (the stride of a.d between
// vectors), 264 the group's first vector, 272 rows left, 280 the group's output for the current
// row, 288/296 the group's first vector's quants and scales, 304 the end of its scales.
//
// Registers in the block loop: SI the row's block, BX and DX its low and high bits of the current
// half, R8 and R9 vector 0's and vector 4's quants, R10 = n and R11 = 3n, R12 the group's vector
// count, R13 vector 0's scale, CX the half's scale shuffles; Y0 a chunk's quants, Y1 its scales,
// Y2 the 32s, Y5-Y7 the half's bits, Y8-Y15 the integer sums.
TEXT ·q6KTileAVX2(SB), NOSPLIT, $312-64
	MOVQ    nb+32(FP), AX
	MOVQ    AX, BX
	SHLQ    $2, BX
	MOVQ    BX, 256(SP)
	SHLQ    $8, AX
	MOVQ    AX, R10
	LEAQ    (R10)(R10*2), R11
	VMOVDQU m32s<>(SB), Y2
	MOVQ    $0, 264(SP)

q6tgroup:
	MOVQ    count+56(FP), R12
	SUBQ    264(SP), R12
	MOVQ    $8, AX
	CMPQ    R12, AX
	CMOVQGT AX, R12
	MOVQ    264(SP), AX
	MOVQ    AX, BX
	IMULQ   R10, BX
	ADDQ    qs+40(FP), BX
	MOVQ    BX, 288(SP)
	MOVQ    AX, BX
	IMULQ   256(SP), BX
	ADDQ    d+48(FP), BX
	MOVQ    BX, 296(SP)
	ADDQ    256(SP), BX
	MOVQ    BX, 304(SP)
	IMULQ   ldd+8(FP), AX
	SHLQ    $2, AX
	ADDQ    dst+0(FP), AX
	MOVQ    AX, 280(SP)
	MOVQ    rows+16(FP), SI
	MOVQ    nrows+24(FP), AX
	MOVQ    AX, 272(SP)

q6trow:
	VXORPS  Y1, Y1, Y1
	VMOVUPS Y1, 0(SP)
	VMOVUPS Y1, 32(SP)
	VMOVUPS Y1, 64(SP)
	VMOVUPS Y1, 96(SP)
	VMOVUPS Y1, 128(SP)
	VMOVUPS Y1, 160(SP)
	VMOVUPS Y1, 192(SP)
	VMOVUPS Y1, 224(SP)
	MOVQ    288(SP), R8
	LEAQ    (R8)(R10*4), R9
	MOVQ    296(SP), R13

q6tblock:
	VPXOR Y8, Y8, Y8
	VPXOR Y9, Y9, Y9
	VPXOR Y10, Y10, Y10
	VPXOR Y11, Y11, Y11
	VPXOR Y12, Y12, Y12
	VPXOR Y13, Y13, Y13
	VPXOR Y14, Y14, Y14
	VPXOR Y15, Y15, Y15
	MOVQ  SI, BX
	LEAQ  128(SI), DX
	LEAQ  k6shuf<>(SB), CX
	MOVQ  $2, AX

q6thalf:
	VMOVDQU (BX), Y5
	VMOVDQU 32(BX), Y6
	VMOVDQU (DX), Y7
	Q6U0(Y5, Y6, Y7, Y0, Y3, nib<>(SB), hi2<>(SB))
	Q6SCALE(0)
	Q6VS(0, q6tc0)

q6tc0:
	Q6U1(Y5, Y6, Y7, Y0, Y3, nib<>(SB), hi2<>(SB))
	Q6SCALE(1)
	Q6VS(32, q6tc1)

q6tc1:
	Q6U2(Y5, Y6, Y7, Y0, Y3, nib<>(SB), hi2<>(SB))
	Q6SCALE(2)
	Q6VS(64, q6tc2)

q6tc2:
	Q6U3(Y5, Y6, Y7, Y0, Y3, nib<>(SB), hi2<>(SB))
	Q6SCALE(3)
	Q6VS(96, q6tc3)

q6tc3:
	ADDQ $64, BX
	ADDQ $32, DX
	ADDQ $128, R8
	ADDQ $128, R9
	ADDQ $64, CX
	DECQ AX
	JNZ  q6thalf

	VPBROADCASTW 208(SI), X5
	VCVTPH2PS    X5, X5
	MOVQ         R13, CX
	MOVQ         SP, DI
	Q6F(Y8)
	CMPQ         R12, $1
	JEQ          q6tclosed
	Q6F(Y9)
	CMPQ         R12, $2
	JEQ          q6tclosed
	Q6F(Y10)
	CMPQ         R12, $3
	JEQ          q6tclosed
	Q6F(Y11)
	CMPQ         R12, $4
	JEQ          q6tclosed
	Q6F(Y12)
	CMPQ         R12, $5
	JEQ          q6tclosed
	Q6F(Y13)
	CMPQ         R12, $6
	JEQ          q6tclosed
	Q6F(Y14)
	CMPQ         R12, $7
	JEQ          q6tclosed
	Q6F(Y15)

q6tclosed:
	ADDQ $210, SI
	ADDQ $4, R13
	CMPQ R13, 304(SP)
	JNE  q6tblock

	MOVQ 280(SP), DX
	MOVQ ldd+8(FP), CX
	SHLQ $2, CX
	MOVQ R12, AX
	MOVQ SP, DI

q6tout:
	VMOVUPS (DI), Y1
	HSUM8(Y1, X1, X3)
	VMOVSS  X1, (DX)
	ADDQ    CX, DX
	ADDQ    $32, DI
	DECQ    AX
	JNZ     q6tout

	ADDQ $4, 280(SP)
	DECQ 272(SP)
	JNZ  q6trow

	ADDQ $8, 264(SP)
	MOVQ count+56(FP), AX
	CMPQ 264(SP), AX
	JLT  q6tgroup

	VZEROUPPER
	RET
