// Matrix kernels for F32, F16 and BF16 weights; see mat_float_amd64.go for the contract.

#include "textflag.h"

// AVX2 matrix kernels for F32, F16 and BF16 weights against float32 activations, in the order of
// ggml's ggml_vec_dot_f32 / ggml_vec_dot_f16 / ggml_vec_dot_bf16 AVX2 paths: per (row, vector), four
// 8-lane accumulators over steps of 32 elements (accumulator j takes elements 32i+8j ... 32i+8j+7),
// ggml's reduction of the four, then the n%32 leftovers one at a time. Every kernel runs exactly this
// sequence of operations for each (row, vector) whatever the tile it belongs to, so results are batch
// invariant. Only VEX-encoded instructions are used, and every kernel ends with VZEROUPPER.

// LOADW_T(mem, r): 8 weights at mem to 8 float32 in r. BF16 kernels keep the byte shuffle
// bf16shuf in Y13 (each bf16 becomes the high half of a float32, the low half zero).
#define LOADW_F32(mem, r) VMOVUPS mem, r
#define LOADW_F16(mem, r) VCVTPH2PS mem, r
#define LOADW_BF16(mem, r) VBROADCASTI128 mem, r; VPSHUFB Y13, r, r

// MACX_T(xmem, wr, acc, t): acc += weights (register) times activation (memory).
// F32 and F16: ggml's GGML_F32_VEC_FMA, one rounding. BF16: ggml's _mm256_add_ps(_mm256_mul_ps(..)).
#define MACX_F32(xmem, wr, acc, t) VFMADD231PS xmem, wr, acc
#define MACX_F16(xmem, wr, acc, t) VFMADD231PS xmem, wr, acc
#define MACX_BF16(xmem, wr, acc, t) VMULPS xmem, wr, t; VADDPS t, acc, acc

// MACW_T(wmem, xr, acc, t): acc += weights (memory) times activation (register).
#define MACW_F32(wmem, xr, acc, t) VFMADD231PS wmem, xr, acc
#define MACW_F16(wmem, xr, acc, t) VCVTPH2PS wmem, t; VFMADD231PS t, xr, acc
#define MACW_BF16(wmem, xr, acc, t) LOADW_BF16(wmem, t); VMULPS xr, t, t; VADDPS t, acc, acc

// REDUCE_T(a0, a1, a2, a3, x0, x1): the four accumulators to one sum in the low lane of x0 (the
// X form of a0; x1 is the X form of a1, used as scratch). F32: a float32, as ggml_vec_dot_f32 keeps
// it. F16 and BF16: a float64, as those dot products continue in ggml_float.
// GGML_F32x8_REDUCE: a0+a2, a1+a3, then their sum; low half + high half; two horizontal adds.
#define REDUCE_F32(a0, a1, a2, a3, x0, x1) \
	VADDPS a2, a0, a0; VADDPS a3, a1, a1; VADDPS a1, a0, a0; \
	VEXTRACTF128 $1, a0, x1; VADDPS x1, x0, x0; VHADDPS x0, x0, x0; VHADDPS x0, x0, x0
// ggml_vec_dot_f16 reduces like F32 and assigns the float to its ggml_float sum.
#define REDUCE_F16(a0, a1, a2, a3, x0, x1) \
	REDUCE_F32(a0, a1, a2, a3, x0, x1); VCVTSS2SD x0, x0, x0
// ggml_vec_dot_bf16: (c1+c3)+(c2+c4); high + low half; g + movehl(g); lane 0 + lane 1 (movehdup);
// then sumf += (ggml_float)g with sumf = 0.
#define REDUCE_BF16(a0, a1, a2, a3, x0, x1) \
	VADDPS a2, a0, a0; VADDPS a3, a1, a1; VADDPS a1, a0, a0; \
	VEXTRACTF128 $1, a0, x1; VADDPS x1, x0, x0; VMOVHLPS x0, x0, x1; VADDPS x1, x0, x0; \
	VMOVSHDUP x0, x1; VADDSS x1, x0, x0; VCVTSS2SD x0, x0, x0; VXORPD x1, x1, x1; VADDSD x1, x0, x0

// TAIL_T(wp, xp, acc): one leftover element (index CX) into the sum. F32: sumf += x*y in float, which
// compilers contract to an FMA. F16 and BF16: the float32 product added to the ggml_float sum.
#define TAIL_F32(wp, xp, acc) VMOVSS (xp)(CX*4), X15; VFMADD231SS (wp)(CX*4), X15, acc
#define TAIL_F16(wp, xp, acc) \
	VPINSRW $0, (wp)(CX*2), X15, X15; VCVTPH2PS X15, X15; VMULSS (xp)(CX*4), X15, X15; \
	VCVTSS2SD X15, X15, X15; VADDSD X15, acc, acc
#define TAIL_BF16(wp, xp, acc) \
	VPXOR X15, X15, X15; VPINSRW $1, (wp)(CX*2), X15, X15; VMULSS (xp)(CX*4), X15, X15; \
	VCVTSS2SD X15, X15, X15; VADDSD X15, acc, acc

// FINAL_T(acc): the sum as the float32 result.
#define FINAL_F32(acc)
#define FINAL_F16(acc) VCVTSD2SS acc, acc, acc
#define FINAL_BF16(acc) VCVTSD2SS acc, acc, acc

#define ZERO12 \
	VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3; \
	VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7; \
	VXORPS Y8, Y8, Y8; VXORPS Y9, Y9, Y9; VXORPS Y10, Y10, Y10; VXORPS Y11, Y11, Y11


// func matvecF32AVX2(dst *float32, rows *byte, nrows, rowBytes int, x *float32, n int)
// dst[r] = dot(row r, x) for r < nrows: three rows at a time sharing each load of x, then one.
TEXT ·matvecF32AVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), AX
	MOVQ rows+8(FP), SI
	MOVQ nrows+16(FP), BX
	MOVQ rowBytes+24(FP), R8
	MOVQ x+32(FP), DI
	MOVQ n+40(FP), R9

	MOVQ R9, DX
	ANDQ $31, DX
	SHRQ $5, R9

F32v_three:
	CMPQ BX, $3
	JLT F32v_one
	ZERO12
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ F32v_three_reduce
F32v_three_loop:
	PREFETCHT0 256(R11); PREFETCHT0 320(R11)
	PREFETCHT0 256(R11)(R8*1); PREFETCHT0 320(R11)(R8*1)
	PREFETCHT0 256(R11)(R8*2); PREFETCHT0 320(R11)(R8*2)
	VMOVUPS 0(R10), Y12
	MACW_F32(0(R11), Y12, Y0, Y14)
	MACW_F32(0(R11)(R8*1), Y12, Y4, Y15)
	MACW_F32(0(R11)(R8*2), Y12, Y8, Y14)
	VMOVUPS 32(R10), Y12
	MACW_F32(32(R11), Y12, Y1, Y14)
	MACW_F32(32(R11)(R8*1), Y12, Y5, Y15)
	MACW_F32(32(R11)(R8*2), Y12, Y9, Y14)
	VMOVUPS 64(R10), Y12
	MACW_F32(64(R11), Y12, Y2, Y14)
	MACW_F32(64(R11)(R8*1), Y12, Y6, Y15)
	MACW_F32(64(R11)(R8*2), Y12, Y10, Y14)
	VMOVUPS 96(R10), Y12
	MACW_F32(96(R11), Y12, Y3, Y14)
	MACW_F32(96(R11)(R8*1), Y12, Y7, Y15)
	MACW_F32(96(R11)(R8*2), Y12, Y11, Y14)
	ADDQ $128, R10
	ADDQ $128, R11
	DECQ R12
	JNZ F32v_three_loop
F32v_three_reduce:
	REDUCE_F32(Y0, Y1, Y2, Y3, X0, X1)
	REDUCE_F32(Y4, Y5, Y6, Y7, X4, X5)
	REDUCE_F32(Y8, Y9, Y10, Y11, X8, X9)
	XORQ CX, CX
	CMPQ CX, DX
	JGE F32v_three_t0
F32v_three_t0_loop:
	TAIL_F32(R11, R10, X0)
	INCQ CX
	CMPQ CX, DX
	JLT F32v_three_t0_loop
F32v_three_t0:
	FINAL_F32(X0)
	LEAQ (R11)(R8*1), R13
	XORQ CX, CX
	CMPQ CX, DX
	JGE F32v_three_t1
F32v_three_t1_loop:
	TAIL_F32(R13, R10, X4)
	INCQ CX
	CMPQ CX, DX
	JLT F32v_three_t1_loop
F32v_three_t1:
	FINAL_F32(X4)
	LEAQ (R11)(R8*2), R13
	XORQ CX, CX
	CMPQ CX, DX
	JGE F32v_three_t2
F32v_three_t2_loop:
	TAIL_F32(R13, R10, X8)
	INCQ CX
	CMPQ CX, DX
	JLT F32v_three_t2_loop
F32v_three_t2:
	FINAL_F32(X8)
	VMOVSS X0, 0(AX)
	VMOVSS X4, 4(AX)
	VMOVSS X8, 8(AX)
	ADDQ $12, AX
	LEAQ (SI)(R8*2), SI
	ADDQ R8, SI
	SUBQ $3, BX
	JMP F32v_three

F32v_one:
	TESTQ BX, BX
	JZ F32v_done
	VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ F32v_one_reduce
F32v_one_loop:
	PREFETCHT0 256(R11); PREFETCHT0 320(R11)
	VMOVUPS 0(R10), Y12
	MACW_F32(0(R11), Y12, Y0, Y14)
	VMOVUPS 32(R10), Y12
	MACW_F32(32(R11), Y12, Y1, Y14)
	VMOVUPS 64(R10), Y12
	MACW_F32(64(R11), Y12, Y2, Y14)
	VMOVUPS 96(R10), Y12
	MACW_F32(96(R11), Y12, Y3, Y14)
	ADDQ $128, R10
	ADDQ $128, R11
	DECQ R12
	JNZ F32v_one_loop
F32v_one_reduce:
	REDUCE_F32(Y0, Y1, Y2, Y3, X0, X1)
	XORQ CX, CX
	CMPQ CX, DX
	JGE F32v_one_t0
F32v_one_t0_loop:
	TAIL_F32(R11, R10, X0)
	INCQ CX
	CMPQ CX, DX
	JLT F32v_one_t0_loop
F32v_one_t0:
	FINAL_F32(X0)
	VMOVSS X0, 0(AX)
	ADDQ $4, AX
	ADDQ R8, SI
	DECQ BX
	JMP F32v_one

F32v_done:
	VZEROUPPER
	RET

// func mat3F32AVX2(dst *float32, ldd int, rows *byte, nrows, rowBytes int, x *float32, n int)
// dst[v*ldd+r] = dot(row r, vector v) for r < nrows and the three vectors v < 3 at x, x+n, x+2n:
// each weight load (and conversion) serves the three vectors.
TEXT ·mat3F32AVX2(SB), NOSPLIT, $0-56
	MOVQ dst+0(FP), AX
	MOVQ ldd+8(FP), R13
	SHLQ $2, R13
	MOVQ rows+16(FP), SI
	MOVQ nrows+24(FP), BX
	MOVQ rowBytes+32(FP), R8
	MOVQ x+40(FP), DI
	MOVQ n+48(FP), R9

	MOVQ R9, DX
	SHLQ $2, DX
	MOVQ R9, R14
	ANDQ $31, R14
	SHRQ $5, R9
	TESTQ BX, BX
	JZ F32m_done

F32m_row:
	ZERO12
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ F32m_reduce
F32m_loop:
	PREFETCHT0 256(R11); PREFETCHT0 320(R11)
	LOADW_F32(0(R11), Y12)
	MACX_F32(0(R10), Y12, Y0, Y14)
	MACX_F32(0(R10)(DX*1), Y12, Y4, Y15)
	MACX_F32(0(R10)(DX*2), Y12, Y8, Y14)
	LOADW_F32(32(R11), Y12)
	MACX_F32(32(R10), Y12, Y1, Y14)
	MACX_F32(32(R10)(DX*1), Y12, Y5, Y15)
	MACX_F32(32(R10)(DX*2), Y12, Y9, Y14)
	LOADW_F32(64(R11), Y12)
	MACX_F32(64(R10), Y12, Y2, Y14)
	MACX_F32(64(R10)(DX*1), Y12, Y6, Y15)
	MACX_F32(64(R10)(DX*2), Y12, Y10, Y14)
	LOADW_F32(96(R11), Y12)
	MACX_F32(96(R10), Y12, Y3, Y14)
	MACX_F32(96(R10)(DX*1), Y12, Y7, Y15)
	MACX_F32(96(R10)(DX*2), Y12, Y11, Y14)
	ADDQ $128, R10
	ADDQ $128, R11
	DECQ R12
	JNZ F32m_loop
F32m_reduce:
	REDUCE_F32(Y0, Y1, Y2, Y3, X0, X1)
	REDUCE_F32(Y4, Y5, Y6, Y7, X4, X5)
	REDUCE_F32(Y8, Y9, Y10, Y11, X8, X9)
	XORQ CX, CX
	CMPQ CX, R14
	JGE F32m_t0
F32m_t0_loop:
	TAIL_F32(R11, R10, X0)
	INCQ CX
	CMPQ CX, R14
	JLT F32m_t0_loop
F32m_t0:
	FINAL_F32(X0)
	LEAQ (R10)(DX*1), R12
	XORQ CX, CX
	CMPQ CX, R14
	JGE F32m_t1
F32m_t1_loop:
	TAIL_F32(R11, R12, X4)
	INCQ CX
	CMPQ CX, R14
	JLT F32m_t1_loop
F32m_t1:
	FINAL_F32(X4)
	LEAQ (R10)(DX*2), R12
	XORQ CX, CX
	CMPQ CX, R14
	JGE F32m_t2
F32m_t2_loop:
	TAIL_F32(R11, R12, X8)
	INCQ CX
	CMPQ CX, R14
	JLT F32m_t2_loop
F32m_t2:
	FINAL_F32(X8)
	VMOVSS X0, (AX)
	VMOVSS X4, (AX)(R13*1)
	VMOVSS X8, (AX)(R13*2)
	ADDQ $4, AX
	ADDQ R8, SI
	DECQ BX
	JNZ F32m_row

F32m_done:
	VZEROUPPER
	RET

// func matvecF16AVX2(dst *float32, rows *byte, nrows, rowBytes int, x *float32, n int)
// dst[r] = dot(row r, x) for r < nrows: three rows at a time sharing each load of x, then one.
TEXT ·matvecF16AVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), AX
	MOVQ rows+8(FP), SI
	MOVQ nrows+16(FP), BX
	MOVQ rowBytes+24(FP), R8
	MOVQ x+32(FP), DI
	MOVQ n+40(FP), R9

	MOVQ R9, DX
	ANDQ $31, DX
	SHRQ $5, R9

F16v_three:
	CMPQ BX, $3
	JLT F16v_one
	ZERO12
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ F16v_three_reduce
F16v_three_loop:
	PREFETCHT0 256(R11)
	PREFETCHT0 256(R11)(R8*1)
	PREFETCHT0 256(R11)(R8*2)
	VMOVUPS 0(R10), Y12
	MACW_F16(0(R11), Y12, Y0, Y14)
	MACW_F16(0(R11)(R8*1), Y12, Y4, Y15)
	MACW_F16(0(R11)(R8*2), Y12, Y8, Y14)
	VMOVUPS 32(R10), Y12
	MACW_F16(16(R11), Y12, Y1, Y14)
	MACW_F16(16(R11)(R8*1), Y12, Y5, Y15)
	MACW_F16(16(R11)(R8*2), Y12, Y9, Y14)
	VMOVUPS 64(R10), Y12
	MACW_F16(32(R11), Y12, Y2, Y14)
	MACW_F16(32(R11)(R8*1), Y12, Y6, Y15)
	MACW_F16(32(R11)(R8*2), Y12, Y10, Y14)
	VMOVUPS 96(R10), Y12
	MACW_F16(48(R11), Y12, Y3, Y14)
	MACW_F16(48(R11)(R8*1), Y12, Y7, Y15)
	MACW_F16(48(R11)(R8*2), Y12, Y11, Y14)
	ADDQ $128, R10
	ADDQ $64, R11
	DECQ R12
	JNZ F16v_three_loop
F16v_three_reduce:
	REDUCE_F16(Y0, Y1, Y2, Y3, X0, X1)
	REDUCE_F16(Y4, Y5, Y6, Y7, X4, X5)
	REDUCE_F16(Y8, Y9, Y10, Y11, X8, X9)
	XORQ CX, CX
	CMPQ CX, DX
	JGE F16v_three_t0
F16v_three_t0_loop:
	TAIL_F16(R11, R10, X0)
	INCQ CX
	CMPQ CX, DX
	JLT F16v_three_t0_loop
F16v_three_t0:
	FINAL_F16(X0)
	LEAQ (R11)(R8*1), R13
	XORQ CX, CX
	CMPQ CX, DX
	JGE F16v_three_t1
F16v_three_t1_loop:
	TAIL_F16(R13, R10, X4)
	INCQ CX
	CMPQ CX, DX
	JLT F16v_three_t1_loop
F16v_three_t1:
	FINAL_F16(X4)
	LEAQ (R11)(R8*2), R13
	XORQ CX, CX
	CMPQ CX, DX
	JGE F16v_three_t2
F16v_three_t2_loop:
	TAIL_F16(R13, R10, X8)
	INCQ CX
	CMPQ CX, DX
	JLT F16v_three_t2_loop
F16v_three_t2:
	FINAL_F16(X8)
	VMOVSS X0, 0(AX)
	VMOVSS X4, 4(AX)
	VMOVSS X8, 8(AX)
	ADDQ $12, AX
	LEAQ (SI)(R8*2), SI
	ADDQ R8, SI
	SUBQ $3, BX
	JMP F16v_three

F16v_one:
	TESTQ BX, BX
	JZ F16v_done
	VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ F16v_one_reduce
F16v_one_loop:
	PREFETCHT0 256(R11)
	VMOVUPS 0(R10), Y12
	MACW_F16(0(R11), Y12, Y0, Y14)
	VMOVUPS 32(R10), Y12
	MACW_F16(16(R11), Y12, Y1, Y14)
	VMOVUPS 64(R10), Y12
	MACW_F16(32(R11), Y12, Y2, Y14)
	VMOVUPS 96(R10), Y12
	MACW_F16(48(R11), Y12, Y3, Y14)
	ADDQ $128, R10
	ADDQ $64, R11
	DECQ R12
	JNZ F16v_one_loop
F16v_one_reduce:
	REDUCE_F16(Y0, Y1, Y2, Y3, X0, X1)
	XORQ CX, CX
	CMPQ CX, DX
	JGE F16v_one_t0
F16v_one_t0_loop:
	TAIL_F16(R11, R10, X0)
	INCQ CX
	CMPQ CX, DX
	JLT F16v_one_t0_loop
F16v_one_t0:
	FINAL_F16(X0)
	VMOVSS X0, 0(AX)
	ADDQ $4, AX
	ADDQ R8, SI
	DECQ BX
	JMP F16v_one

F16v_done:
	VZEROUPPER
	RET

// func mat3F16AVX2(dst *float32, ldd int, rows *byte, nrows, rowBytes int, x *float32, n int)
// dst[v*ldd+r] = dot(row r, vector v) for r < nrows and the three vectors v < 3 at x, x+n, x+2n:
// each weight load (and conversion) serves the three vectors.
TEXT ·mat3F16AVX2(SB), NOSPLIT, $0-56
	MOVQ dst+0(FP), AX
	MOVQ ldd+8(FP), R13
	SHLQ $2, R13
	MOVQ rows+16(FP), SI
	MOVQ nrows+24(FP), BX
	MOVQ rowBytes+32(FP), R8
	MOVQ x+40(FP), DI
	MOVQ n+48(FP), R9

	MOVQ R9, DX
	SHLQ $2, DX
	MOVQ R9, R14
	ANDQ $31, R14
	SHRQ $5, R9
	TESTQ BX, BX
	JZ F16m_done

F16m_row:
	ZERO12
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ F16m_reduce
F16m_loop:
	PREFETCHT0 256(R11)
	LOADW_F16(0(R11), Y12)
	MACX_F16(0(R10), Y12, Y0, Y14)
	MACX_F16(0(R10)(DX*1), Y12, Y4, Y15)
	MACX_F16(0(R10)(DX*2), Y12, Y8, Y14)
	LOADW_F16(16(R11), Y12)
	MACX_F16(32(R10), Y12, Y1, Y14)
	MACX_F16(32(R10)(DX*1), Y12, Y5, Y15)
	MACX_F16(32(R10)(DX*2), Y12, Y9, Y14)
	LOADW_F16(32(R11), Y12)
	MACX_F16(64(R10), Y12, Y2, Y14)
	MACX_F16(64(R10)(DX*1), Y12, Y6, Y15)
	MACX_F16(64(R10)(DX*2), Y12, Y10, Y14)
	LOADW_F16(48(R11), Y12)
	MACX_F16(96(R10), Y12, Y3, Y14)
	MACX_F16(96(R10)(DX*1), Y12, Y7, Y15)
	MACX_F16(96(R10)(DX*2), Y12, Y11, Y14)
	ADDQ $128, R10
	ADDQ $64, R11
	DECQ R12
	JNZ F16m_loop
F16m_reduce:
	REDUCE_F16(Y0, Y1, Y2, Y3, X0, X1)
	REDUCE_F16(Y4, Y5, Y6, Y7, X4, X5)
	REDUCE_F16(Y8, Y9, Y10, Y11, X8, X9)
	XORQ CX, CX
	CMPQ CX, R14
	JGE F16m_t0
F16m_t0_loop:
	TAIL_F16(R11, R10, X0)
	INCQ CX
	CMPQ CX, R14
	JLT F16m_t0_loop
F16m_t0:
	FINAL_F16(X0)
	LEAQ (R10)(DX*1), R12
	XORQ CX, CX
	CMPQ CX, R14
	JGE F16m_t1
F16m_t1_loop:
	TAIL_F16(R11, R12, X4)
	INCQ CX
	CMPQ CX, R14
	JLT F16m_t1_loop
F16m_t1:
	FINAL_F16(X4)
	LEAQ (R10)(DX*2), R12
	XORQ CX, CX
	CMPQ CX, R14
	JGE F16m_t2
F16m_t2_loop:
	TAIL_F16(R11, R12, X8)
	INCQ CX
	CMPQ CX, R14
	JLT F16m_t2_loop
F16m_t2:
	FINAL_F16(X8)
	VMOVSS X0, (AX)
	VMOVSS X4, (AX)(R13*1)
	VMOVSS X8, (AX)(R13*2)
	ADDQ $4, AX
	ADDQ R8, SI
	DECQ BX
	JNZ F16m_row

F16m_done:
	VZEROUPPER
	RET

// func matvecBF16AVX2(dst *float32, rows *byte, nrows, rowBytes int, x *float32, n int)
// dst[r] = dot(row r, x) for r < nrows: three rows at a time sharing each load of x, then one.
TEXT ·matvecBF16AVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), AX
	MOVQ rows+8(FP), SI
	MOVQ nrows+16(FP), BX
	MOVQ rowBytes+24(FP), R8
	MOVQ x+32(FP), DI
	MOVQ n+40(FP), R9
	VMOVDQU bf16shuf<>(SB), Y13
	MOVQ R9, DX
	ANDQ $31, DX
	SHRQ $5, R9

BF16v_three:
	CMPQ BX, $3
	JLT BF16v_one
	ZERO12
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ BF16v_three_reduce
BF16v_three_loop:
	PREFETCHT0 256(R11)
	PREFETCHT0 256(R11)(R8*1)
	PREFETCHT0 256(R11)(R8*2)
	VMOVUPS 0(R10), Y12
	MACW_BF16(0(R11), Y12, Y0, Y14)
	MACW_BF16(0(R11)(R8*1), Y12, Y4, Y15)
	MACW_BF16(0(R11)(R8*2), Y12, Y8, Y14)
	VMOVUPS 32(R10), Y12
	MACW_BF16(16(R11), Y12, Y1, Y14)
	MACW_BF16(16(R11)(R8*1), Y12, Y5, Y15)
	MACW_BF16(16(R11)(R8*2), Y12, Y9, Y14)
	VMOVUPS 64(R10), Y12
	MACW_BF16(32(R11), Y12, Y2, Y14)
	MACW_BF16(32(R11)(R8*1), Y12, Y6, Y15)
	MACW_BF16(32(R11)(R8*2), Y12, Y10, Y14)
	VMOVUPS 96(R10), Y12
	MACW_BF16(48(R11), Y12, Y3, Y14)
	MACW_BF16(48(R11)(R8*1), Y12, Y7, Y15)
	MACW_BF16(48(R11)(R8*2), Y12, Y11, Y14)
	ADDQ $128, R10
	ADDQ $64, R11
	DECQ R12
	JNZ BF16v_three_loop
BF16v_three_reduce:
	REDUCE_BF16(Y0, Y1, Y2, Y3, X0, X1)
	REDUCE_BF16(Y4, Y5, Y6, Y7, X4, X5)
	REDUCE_BF16(Y8, Y9, Y10, Y11, X8, X9)
	XORQ CX, CX
	CMPQ CX, DX
	JGE BF16v_three_t0
BF16v_three_t0_loop:
	TAIL_BF16(R11, R10, X0)
	INCQ CX
	CMPQ CX, DX
	JLT BF16v_three_t0_loop
BF16v_three_t0:
	FINAL_BF16(X0)
	LEAQ (R11)(R8*1), R13
	XORQ CX, CX
	CMPQ CX, DX
	JGE BF16v_three_t1
BF16v_three_t1_loop:
	TAIL_BF16(R13, R10, X4)
	INCQ CX
	CMPQ CX, DX
	JLT BF16v_three_t1_loop
BF16v_three_t1:
	FINAL_BF16(X4)
	LEAQ (R11)(R8*2), R13
	XORQ CX, CX
	CMPQ CX, DX
	JGE BF16v_three_t2
BF16v_three_t2_loop:
	TAIL_BF16(R13, R10, X8)
	INCQ CX
	CMPQ CX, DX
	JLT BF16v_three_t2_loop
BF16v_three_t2:
	FINAL_BF16(X8)
	VMOVSS X0, 0(AX)
	VMOVSS X4, 4(AX)
	VMOVSS X8, 8(AX)
	ADDQ $12, AX
	LEAQ (SI)(R8*2), SI
	ADDQ R8, SI
	SUBQ $3, BX
	JMP BF16v_three

BF16v_one:
	TESTQ BX, BX
	JZ BF16v_done
	VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ BF16v_one_reduce
BF16v_one_loop:
	PREFETCHT0 256(R11)
	VMOVUPS 0(R10), Y12
	MACW_BF16(0(R11), Y12, Y0, Y14)
	VMOVUPS 32(R10), Y12
	MACW_BF16(16(R11), Y12, Y1, Y14)
	VMOVUPS 64(R10), Y12
	MACW_BF16(32(R11), Y12, Y2, Y14)
	VMOVUPS 96(R10), Y12
	MACW_BF16(48(R11), Y12, Y3, Y14)
	ADDQ $128, R10
	ADDQ $64, R11
	DECQ R12
	JNZ BF16v_one_loop
BF16v_one_reduce:
	REDUCE_BF16(Y0, Y1, Y2, Y3, X0, X1)
	XORQ CX, CX
	CMPQ CX, DX
	JGE BF16v_one_t0
BF16v_one_t0_loop:
	TAIL_BF16(R11, R10, X0)
	INCQ CX
	CMPQ CX, DX
	JLT BF16v_one_t0_loop
BF16v_one_t0:
	FINAL_BF16(X0)
	VMOVSS X0, 0(AX)
	ADDQ $4, AX
	ADDQ R8, SI
	DECQ BX
	JMP BF16v_one

BF16v_done:
	VZEROUPPER
	RET

// func mat3BF16AVX2(dst *float32, ldd int, rows *byte, nrows, rowBytes int, x *float32, n int)
// dst[v*ldd+r] = dot(row r, vector v) for r < nrows and the three vectors v < 3 at x, x+n, x+2n:
// each weight load (and conversion) serves the three vectors.
TEXT ·mat3BF16AVX2(SB), NOSPLIT, $0-56
	MOVQ dst+0(FP), AX
	MOVQ ldd+8(FP), R13
	SHLQ $2, R13
	MOVQ rows+16(FP), SI
	MOVQ nrows+24(FP), BX
	MOVQ rowBytes+32(FP), R8
	MOVQ x+40(FP), DI
	MOVQ n+48(FP), R9
	VMOVDQU bf16shuf<>(SB), Y13
	MOVQ R9, DX
	SHLQ $2, DX
	MOVQ R9, R14
	ANDQ $31, R14
	SHRQ $5, R9
	TESTQ BX, BX
	JZ BF16m_done

BF16m_row:
	ZERO12
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ BF16m_reduce
BF16m_loop:
	PREFETCHT0 256(R11)
	LOADW_BF16(0(R11), Y12)
	MACX_BF16(0(R10), Y12, Y0, Y14)
	MACX_BF16(0(R10)(DX*1), Y12, Y4, Y15)
	MACX_BF16(0(R10)(DX*2), Y12, Y8, Y14)
	LOADW_BF16(16(R11), Y12)
	MACX_BF16(32(R10), Y12, Y1, Y14)
	MACX_BF16(32(R10)(DX*1), Y12, Y5, Y15)
	MACX_BF16(32(R10)(DX*2), Y12, Y9, Y14)
	LOADW_BF16(32(R11), Y12)
	MACX_BF16(64(R10), Y12, Y2, Y14)
	MACX_BF16(64(R10)(DX*1), Y12, Y6, Y15)
	MACX_BF16(64(R10)(DX*2), Y12, Y10, Y14)
	LOADW_BF16(48(R11), Y12)
	MACX_BF16(96(R10), Y12, Y3, Y14)
	MACX_BF16(96(R10)(DX*1), Y12, Y7, Y15)
	MACX_BF16(96(R10)(DX*2), Y12, Y11, Y14)
	ADDQ $128, R10
	ADDQ $64, R11
	DECQ R12
	JNZ BF16m_loop
BF16m_reduce:
	REDUCE_BF16(Y0, Y1, Y2, Y3, X0, X1)
	REDUCE_BF16(Y4, Y5, Y6, Y7, X4, X5)
	REDUCE_BF16(Y8, Y9, Y10, Y11, X8, X9)
	XORQ CX, CX
	CMPQ CX, R14
	JGE BF16m_t0
BF16m_t0_loop:
	TAIL_BF16(R11, R10, X0)
	INCQ CX
	CMPQ CX, R14
	JLT BF16m_t0_loop
BF16m_t0:
	FINAL_BF16(X0)
	LEAQ (R10)(DX*1), R12
	XORQ CX, CX
	CMPQ CX, R14
	JGE BF16m_t1
BF16m_t1_loop:
	TAIL_BF16(R11, R12, X4)
	INCQ CX
	CMPQ CX, R14
	JLT BF16m_t1_loop
BF16m_t1:
	FINAL_BF16(X4)
	LEAQ (R10)(DX*2), R12
	XORQ CX, CX
	CMPQ CX, R14
	JGE BF16m_t2
BF16m_t2_loop:
	TAIL_BF16(R11, R12, X8)
	INCQ CX
	CMPQ CX, R14
	JLT BF16m_t2_loop
BF16m_t2:
	FINAL_BF16(X8)
	VMOVSS X0, (AX)
	VMOVSS X4, (AX)(R13*1)
	VMOVSS X8, (AX)(R13*2)
	ADDQ $4, AX
	ADDQ R8, SI
	DECQ BX
	JNZ BF16m_row

BF16m_done:
	VZEROUPPER
	RET

// VPSHUFB mask: bf16 elements 0-3 (low lane) and 4-7 (high lane) of a broadcast 16-byte load to float32.
DATA bf16shuf<>+0(SB)/4, $0x01008080
DATA bf16shuf<>+4(SB)/4, $0x03028080
DATA bf16shuf<>+8(SB)/4, $0x05048080
DATA bf16shuf<>+12(SB)/4, $0x07068080
DATA bf16shuf<>+16(SB)/4, $0x09088080
DATA bf16shuf<>+20(SB)/4, $0x0b0a8080
DATA bf16shuf<>+24(SB)/4, $0x0d0c8080
DATA bf16shuf<>+28(SB)/4, $0x0f0e8080
GLOBL bf16shuf<>(SB), RODATA|NOPTR, $32
