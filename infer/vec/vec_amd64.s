#include "textflag.h"

// AVX2 + FMA + F16C kernels of package vec (see vec.go and generic.go, whose Go versions run the
// same operations in the same order). VEX-encoded instructions only; every routine ends with
// VZEROUPPER, so the legacy-SSE scalar code Go compiles around them pays no transition penalty.

// ---- ggml_vec_dot_f16 (the macros of infer/quant/mat_float_amd64.s, F16 part) ----

// MACW_F16(wmem, xr, acc, t): acc += F16 weights (memory) times float32 (register), fused.
#define MACW_F16(wmem, xr, acc, t) VCVTPH2PS wmem, t; VFMADD231PS t, xr, acc

// REDUCE_F16: GGML_F32x8_REDUCE of four accumulators (a0+a2, a1+a3, their sum, low half + high
// half, two horizontal adds), the float32 result widened to the float64 sum (low lane of x0).
#define REDUCE_F16(a0, a1, a2, a3, x0, x1) \
	VADDPS a2, a0, a0; VADDPS a3, a1, a1; VADDPS a1, a0, a0; \
	VEXTRACTF128 $1, a0, x1; VADDPS x1, x0, x0; VHADDPS x0, x0, x0; VHADDPS x0, x0, x0; \
	VCVTSS2SD x0, x0, x0

// TAIL_F16(wp, xp, acc): leftover element CX: the float32 product added to the float64 sum.
#define TAIL_F16(wp, xp, acc) \
	VPINSRW $0, (wp)(CX*2), X15, X15; VCVTPH2PS X15, X15; VMULSS (xp)(CX*4), X15, X15; \
	VCVTSS2SD X15, X15, X15; VADDSD X15, acc, acc

#define FINAL_F16(acc) VCVTSD2SS acc, acc, acc

#define ZERO12 \
	VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3; \
	VXORPS Y4, Y4, Y4; VXORPS Y5, Y5, Y5; VXORPS Y6, Y6, Y6; VXORPS Y7, Y7, Y7; \
	VXORPS Y8, Y8, Y8; VXORPS Y9, Y9, Y9; VXORPS Y10, Y10, Y10; VXORPS Y11, Y11, Y11

// func dotsF16AVX2(dst *float32, k *uint16, nt, strideBytes int, q *float32, n int)
// dst[t] = dot(key t, q) for t < nt, key t at k + t*strideBytes: three keys at a time sharing each
// load of q, then one.
TEXT ·dotsF16AVX2(SB), NOSPLIT, $0-48
	MOVQ dst+0(FP), AX
	MOVQ k+8(FP), SI
	MOVQ nt+16(FP), BX
	MOVQ strideBytes+24(FP), R8
	MOVQ q+32(FP), DI
	MOVQ n+40(FP), R9
	MOVQ R9, DX
	ANDQ $31, DX
	SHRQ $5, R9

dots_three:
	CMPQ BX, $3
	JLT dots_one
	ZERO12
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ dots_three_reduce
dots_three_loop:
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
	JNZ dots_three_loop
dots_three_reduce:
	REDUCE_F16(Y0, Y1, Y2, Y3, X0, X1)
	REDUCE_F16(Y4, Y5, Y6, Y7, X4, X5)
	REDUCE_F16(Y8, Y9, Y10, Y11, X8, X9)
	XORQ CX, CX
	CMPQ CX, DX
	JGE dots_three_t0
dots_three_t0_loop:
	TAIL_F16(R11, R10, X0)
	INCQ CX
	CMPQ CX, DX
	JLT dots_three_t0_loop
dots_three_t0:
	FINAL_F16(X0)
	LEAQ (R11)(R8*1), R13
	XORQ CX, CX
	CMPQ CX, DX
	JGE dots_three_t1
dots_three_t1_loop:
	TAIL_F16(R13, R10, X4)
	INCQ CX
	CMPQ CX, DX
	JLT dots_three_t1_loop
dots_three_t1:
	FINAL_F16(X4)
	LEAQ (R11)(R8*2), R13
	XORQ CX, CX
	CMPQ CX, DX
	JGE dots_three_t2
dots_three_t2_loop:
	TAIL_F16(R13, R10, X8)
	INCQ CX
	CMPQ CX, DX
	JLT dots_three_t2_loop
dots_three_t2:
	FINAL_F16(X8)
	VMOVSS X0, 0(AX)
	VMOVSS X4, 4(AX)
	VMOVSS X8, 8(AX)
	ADDQ $12, AX
	LEAQ (SI)(R8*2), SI
	ADDQ R8, SI
	SUBQ $3, BX
	JMP dots_three

dots_one:
	TESTQ BX, BX
	JZ dots_done
	VXORPS Y0, Y0, Y0; VXORPS Y1, Y1, Y1; VXORPS Y2, Y2, Y2; VXORPS Y3, Y3, Y3
	MOVQ DI, R10
	MOVQ SI, R11
	MOVQ R9, R12
	TESTQ R12, R12
	JZ dots_one_reduce
dots_one_loop:
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
	JNZ dots_one_loop
dots_one_reduce:
	REDUCE_F16(Y0, Y1, Y2, Y3, X0, X1)
	XORQ CX, CX
	CMPQ CX, DX
	JGE dots_one_t0
dots_one_t0_loop:
	TAIL_F16(R11, R10, X0)
	INCQ CX
	CMPQ CX, DX
	JLT dots_one_t0_loop
dots_one_t0:
	FINAL_F16(X0)
	VMOVSS X0, 0(AX)
	ADDQ $4, AX
	ADDQ R8, SI
	DECQ BX
	JMP dots_one

dots_done:
	VZEROUPPER
	RET

// ---- weighted sum of F16 rows ----

// func axpysF16AVX2(out *float32, nd int, p *float32, nt int, v *uint16, strideBytes int)
// out[d] = fma(p[t], v[t][d], out[d]) for t < nt in order, d < nd, row t at v + t*strideBytes.
// Blocks of 64 outputs stay in eight registers over all t; then blocks of 8; then single outputs.
TEXT ·axpysF16AVX2(SB), NOSPLIT, $0-48
	MOVQ out+0(FP), DI
	MOVQ nd+8(FP), BX
	MOVQ p+16(FP), SI
	MOVQ nt+24(FP), R9
	MOVQ v+32(FP), R8
	MOVQ strideBytes+40(FP), DX

axpy_block64:
	CMPQ BX, $64
	JLT axpy_block8
	VMOVUPS 0(DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	VMOVUPS 128(DI), Y4
	VMOVUPS 160(DI), Y5
	VMOVUPS 192(DI), Y6
	VMOVUPS 224(DI), Y7
	MOVQ SI, R10
	MOVQ R8, R11
	MOVQ R9, R12
axpy_block64_t:
	VBROADCASTSS (R10), Y8
	VCVTPH2PS 0(R11), Y9
	VFMADD231PS Y9, Y8, Y0
	VCVTPH2PS 16(R11), Y10
	VFMADD231PS Y10, Y8, Y1
	VCVTPH2PS 32(R11), Y11
	VFMADD231PS Y11, Y8, Y2
	VCVTPH2PS 48(R11), Y12
	VFMADD231PS Y12, Y8, Y3
	VCVTPH2PS 64(R11), Y13
	VFMADD231PS Y13, Y8, Y4
	VCVTPH2PS 80(R11), Y14
	VFMADD231PS Y14, Y8, Y5
	VCVTPH2PS 96(R11), Y15
	VFMADD231PS Y15, Y8, Y6
	VCVTPH2PS 112(R11), Y9
	VFMADD231PS Y9, Y8, Y7
	ADDQ $4, R10
	ADDQ DX, R11
	DECQ R12
	JNZ axpy_block64_t
	VMOVUPS Y0, 0(DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	VMOVUPS Y4, 128(DI)
	VMOVUPS Y5, 160(DI)
	VMOVUPS Y6, 192(DI)
	VMOVUPS Y7, 224(DI)
	ADDQ $256, DI
	ADDQ $128, R8
	SUBQ $64, BX
	JMP axpy_block64

axpy_block8:
	CMPQ BX, $8
	JLT axpy_single
	VMOVUPS 0(DI), Y0
	MOVQ SI, R10
	MOVQ R8, R11
	MOVQ R9, R12
axpy_block8_t:
	VBROADCASTSS (R10), Y8
	VCVTPH2PS 0(R11), Y9
	VFMADD231PS Y9, Y8, Y0
	ADDQ $4, R10
	ADDQ DX, R11
	DECQ R12
	JNZ axpy_block8_t
	VMOVUPS Y0, 0(DI)
	ADDQ $32, DI
	ADDQ $16, R8
	SUBQ $8, BX
	JMP axpy_block8

axpy_single:
	TESTQ BX, BX
	JZ axpy_done
	VMOVSS 0(DI), X0
	MOVQ SI, R10
	MOVQ R8, R11
	MOVQ R9, R12
axpy_single_t:
	VPINSRW $0, (R11), X9, X9
	VCVTPH2PS X9, X9
	VFMADD231SS (R10), X9, X0
	ADDQ $4, R10
	ADDQ DX, R11
	DECQ R12
	JNZ axpy_single_t
	VMOVSS X0, 0(DI)
	ADDQ $4, DI
	ADDQ $2, R8
	DECQ BX
	JMP axpy_single

axpy_done:
	VZEROUPPER
	RET

// ---- ggml_v_expf ----

// Eight copies of each constant, so that any operation can take it from memory.
#define CONST8(name, bits) \
	DATA name<>+0(SB)/4, $bits; DATA name<>+4(SB)/4, $bits; DATA name<>+8(SB)/4, $bits; \
	DATA name<>+12(SB)/4, $bits; DATA name<>+16(SB)/4, $bits; DATA name<>+20(SB)/4, $bits; \
	DATA name<>+24(SB)/4, $bits; DATA name<>+28(SB)/4, $bits; GLOBL name<>(SB), RODATA|NOPTR, $32

CONST8(expShift, 0x4b400000)  // 0x1.8p23: adding it rounds to an integer in the low bits
CONST8(expLog2e, 0x3fb8aa3b)  // 0x1.715476p+0
CONST8(expLn2Hi, 0x3f317200)  // 0x1.62e4p-1
CONST8(expLn2Lo, 0x35bfbe8e)  // 0x1.7f7d1cp-20
CONST8(expC5, 0x3c072010)     // 0x1.0e4020p-7
CONST8(expC4, 0x3d2b9f17)     // 0x1.573e2ep-5
CONST8(expC3, 0x3e2aaf33)     // 0x1.555e66p-3
CONST8(expC2, 0x3efffedb)     // 0x1.fffdb6p-2
CONST8(expC1, 0x3f7ffff6)     // 0x1.ffffecp-1
CONST8(expOne, 0x3f800000)    // 1.0f, also added as an integer to make 2^n
CONST8(expAbs, 0x7fffffff)
CONST8(exp126, 0x42fc0000)    // 126.0f
CONST8(exp192, 0x43400000)    // 192.0f
CONST8(expG, 0x82000000)
CONST8(expS1, 0x7f000000)

// EXP_CORE: Y11 = ggml_v_expf(Y0) for every lane whose |n| <= 126, and Y6 = the lanes whose |n| > 126
// (for which EXP_SLOW must run). Clobbers Y0-Y2, Y4-Y11; keeps Y1 = 2^n's exponent bits (e), Y2 = n,
// Y5 = |n|, Y8 = j for EXP_SLOW. Y3, Y12-Y15 untouched here.
#define EXP_CORE \
	VMOVUPS expShift<>(SB), Y1; VFMADD231PS expLog2e<>(SB), Y0, Y1; \
	VSUBPS expShift<>(SB), Y1, Y2; \
	VFNMADD231PS expLn2Hi<>(SB), Y2, Y0; VFNMADD231PS expLn2Lo<>(SB), Y2, Y0; \
	VPSLLD $23, Y1, Y1; VPADDD expOne<>(SB), Y1, Y4; \
	VANDPS expAbs<>(SB), Y2, Y5; VCMPPS $0x1e, exp126<>(SB), Y5, Y6; \
	VMULPS Y0, Y0, Y7; \
	VMOVUPS expC5<>(SB), Y8; VFMADD213PS expC4<>(SB), Y0, Y8; \
	VMOVUPS expC3<>(SB), Y9; VFMADD213PS expC2<>(SB), Y0, Y9; \
	VFMADD213PS Y9, Y7, Y8; \
	VMULPS expC1<>(SB), Y0, Y10; \
	VFMADD213PS Y10, Y7, Y8; \
	VMOVAPS Y4, Y11; VFMADD231PS Y8, Y4, Y11

// EXP_SLOW: Y11 = ggml_v_expf for all lanes, from EXP_CORE's registers: where |n| > 126 the scale
// 2^n is split in two (s1, s2) so the result does not overflow or underflow early, and beyond 192
// it is s1*s1 (infinity or zero). Clobbers Y1, Y5, Y12-Y14.
#define EXP_SLOW \
	VXORPS Y12, Y12, Y12; VCMPPS $0x12, Y12, Y2, Y12; VANDPS expG<>(SB), Y12, Y12; \
	VPADDD expS1<>(SB), Y12, Y13; VPSUBD Y12, Y1, Y1; \
	VCMPPS $0x1e, exp192<>(SB), Y5, Y5; \
	VMULPS Y13, Y13, Y14; \
	VFMADD213PS Y1, Y8, Y1; VMULPS Y13, Y1, Y1; \
	VBLENDVPS Y6, Y1, Y11, Y11; VBLENDVPS Y5, Y14, Y11, Y11

// func expSubAVX2(x *float32, n int, m float32) float64
// x[i] = ggml_v_expf(x[i]-m) for i < n (a multiple of 8); returns the float64 sum of each group's
// float32 sum, reduced as ggml_vec_soft_max_f32's AVX2 loop does.
TEXT ·expSubAVX2(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Y15
	VXORPD X3, X3, X3
	SHRQ $3, CX
	JZ expsub_done
expsub_loop:
	VMOVUPS (DI), Y0
	VSUBPS Y15, Y0, Y0
	EXP_CORE
	VMOVMSKPS Y6, AX
	TESTL AX, AX
	JZ expsub_store
	EXP_SLOW
expsub_store:
	VMOVUPS Y11, (DI)
	VEXTRACTF128 $1, Y11, X12
	VADDPS X12, X11, X11
	VMOVHLPS X11, X11, X12
	VADDPS X12, X11, X11
	VMOVSHDUP X11, X12
	VADDSS X12, X11, X11
	VCVTSS2SD X11, X11, X11
	VADDSD X11, X3, X3
	ADDQ $32, DI
	DECQ CX
	JNZ expsub_loop
expsub_done:
	VMOVSD X3, ret+24(FP)
	VZEROUPPER
	RET

// func swiglu8AVX2(gate, up *float32, n int)
// gate[i] = ggml_v_silu(gate[i]) * up[i] for i < n (a multiple of 8): x / (1 + ggml_v_expf(0-x)).
TEXT ·swiglu8AVX2(SB), NOSPLIT, $0-24
	MOVQ gate+0(FP), DI
	MOVQ up+8(FP), SI
	MOVQ n+16(FP), CX
	SHRQ $3, CX
	JZ swiglu_done
swiglu_loop:
	VXORPS Y0, Y0, Y0
	VSUBPS (DI), Y0, Y0
	EXP_CORE
	VMOVMSKPS Y6, AX
	TESTL AX, AX
	JZ swiglu_fast
	EXP_SLOW
swiglu_fast:
	VADDPS expOne<>(SB), Y11, Y11
	VMOVUPS (DI), Y12
	VDIVPS Y11, Y12, Y12
	VMULPS (SI), Y12, Y12
	VMOVUPS Y12, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	DECQ CX
	JNZ swiglu_loop
swiglu_done:
	VZEROUPPER
	RET

// ---- elementwise ----

// func maxAVX2(x *float32, n int) float32
// The largest of x[:n], n >= 1 (lane-wise VMAXPS, which is ggml's MAX(max, x) for numbers).
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX
	MOVL $0xff800000, AX
	VMOVD AX, X0
	VBROADCASTSS X0, Y0
	VMOVAPS Y0, Y1
	CMPQ CX, $16
	JLT max_8
max_16:
	VMAXPS (DI), Y0, Y0
	VMAXPS 32(DI), Y1, Y1
	ADDQ $64, DI
	SUBQ $16, CX
	CMPQ CX, $16
	JGE max_16
max_8:
	VMAXPS Y1, Y0, Y0
	CMPQ CX, $8
	JLT max_reduce
	VMAXPS (DI), Y0, Y0
	ADDQ $32, DI
	SUBQ $8, CX
max_reduce:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VMOVHLPS X0, X0, X1
	VMAXPS X1, X0, X0
	VMOVSHDUP X0, X1
	VMAXSS X1, X0, X0
	TESTQ CX, CX
	JZ max_done
max_tail:
	VMAXSS (DI), X0, X0
	ADDQ $4, DI
	DECQ CX
	JNZ max_tail
max_done:
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET

// func scaleAVX2(x *float32, n int, s float32)
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX
	VBROADCASTSS s+16(FP), Y0
	CMPQ CX, $32
	JLT scale_8
scale_32:
	VMULPS (DI), Y0, Y1
	VMULPS 32(DI), Y0, Y2
	VMULPS 64(DI), Y0, Y3
	VMULPS 96(DI), Y0, Y4
	VMOVUPS Y1, (DI)
	VMOVUPS Y2, 32(DI)
	VMOVUPS Y3, 64(DI)
	VMOVUPS Y4, 96(DI)
	ADDQ $128, DI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE scale_32
scale_8:
	CMPQ CX, $8
	JLT scale_tail
	VMULPS (DI), Y0, Y1
	VMOVUPS Y1, (DI)
	ADDQ $32, DI
	SUBQ $8, CX
	JMP scale_8
scale_tail:
	TESTQ CX, CX
	JZ scale_done
scale_1:
	VMULSS (DI), X0, X1
	VMOVSS X1, (DI)
	ADDQ $4, DI
	DECQ CX
	JNZ scale_1
scale_done:
	VZEROUPPER
	RET

// func addAVX2(dst, src *float32, n int)
TEXT ·addAVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	CMPQ CX, $32
	JLT add_8
add_32:
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	VADDPS (SI), Y0, Y0
	VADDPS 32(SI), Y1, Y1
	VADDPS 64(SI), Y2, Y2
	VADDPS 96(SI), Y3, Y3
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	ADDQ $128, DI
	ADDQ $128, SI
	SUBQ $32, CX
	CMPQ CX, $32
	JGE add_32
add_8:
	CMPQ CX, $8
	JLT add_tail
	VMOVUPS (DI), Y0
	VADDPS (SI), Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
	JMP add_8
add_tail:
	TESTQ CX, CX
	JZ add_done
add_1:
	VMOVSS (DI), X0
	VADDSS (SI), X0, X0
	VMOVSS X0, (DI)
	ADDQ $4, DI
	ADDQ $4, SI
	DECQ CX
	JNZ add_1
add_done:
	VZEROUPPER
	RET

// func roundF16AVX2(dst, src *float32, n int)
// dst[i] = F16ToF32(F32ToF16(src[i])): VCVTPS2PH with immediate 0 (nearest even), then VCVTPH2PS.
TEXT ·roundF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	CMPQ CX, $16
	JLT round_8
round_16:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VCVTPS2PH $0, Y0, X0
	VCVTPS2PH $0, Y1, X1
	VCVTPH2PS X0, Y0
	VCVTPH2PS X1, Y1
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	ADDQ $64, DI
	ADDQ $64, SI
	SUBQ $16, CX
	CMPQ CX, $16
	JGE round_16
round_8:
	CMPQ CX, $8
	JLT round_tail
	VMOVUPS (SI), Y0
	VCVTPS2PH $0, Y0, X0
	VCVTPH2PS X0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
round_tail:
	TESTQ CX, CX
	JZ round_done
round_1:
	VMOVSS (SI), X0
	VCVTPS2PH $0, X0, X0
	VCVTPH2PS X0, X0
	VMOVSS X0, (DI)
	ADDQ $4, DI
	ADDQ $4, SI
	DECQ CX
	JNZ round_1
round_done:
	VZEROUPPER
	RET

// func toF16AVX2(dst *uint16, src *float32, n int)
TEXT ·toF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	CMPQ CX, $8
	JLT tof16_tail
tof16_8:
	VMOVUPS (SI), Y0
	VCVTPS2PH $0, Y0, (DI)
	ADDQ $16, DI
	ADDQ $32, SI
	SUBQ $8, CX
	CMPQ CX, $8
	JGE tof16_8
tof16_tail:
	TESTQ CX, CX
	JZ tof16_done
tof16_1:
	VMOVSS (SI), X0
	VCVTPS2PH $0, X0, X0
	VPEXTRW $0, X0, (DI)
	ADDQ $2, DI
	ADDQ $4, SI
	DECQ CX
	JNZ tof16_1
tof16_done:
	VZEROUPPER
	RET

// func fromF16AVX2(dst *float32, src *uint16, n int)
TEXT ·fromF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	CMPQ CX, $8
	JLT fromf16_tail
fromf16_8:
	VCVTPH2PS (SI), Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $16, SI
	SUBQ $8, CX
	CMPQ CX, $8
	JGE fromf16_8
fromf16_tail:
	TESTQ CX, CX
	JZ fromf16_done
fromf16_1:
	VPINSRW $0, (SI), X0, X0
	VCVTPH2PS X0, X0
	VMOVSS X0, (DI)
	ADDQ $4, DI
	ADDQ $2, SI
	DECQ CX
	JNZ fromf16_1
fromf16_done:
	VZEROUPPER
	RET
