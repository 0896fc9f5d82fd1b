#include "textflag.h"

// AVX2 (+F16C) activation conversions, bit for bit the Go versions in activation.go. Only VEX
// encodings are used and every kernel ends with VZEROUPPER: legacy SSE code (all of Go's scalar
// float code) after dirty upper halves costs a state transition of about 100 ns on these machines.
//
// Magnitudes are compared as integers: for non-negative floats (sign cleared) integer order is
// float order, so VPMAXSD gives the exact float maximum of finite values, and any Inf or NaN in a
// block shows as a maximum with all exponent bits set (>= 0x7f800000). The quantisers stop at such
// a block, and at one whose scale overflows (|max| below about 3.7e-37, where 127/max is Inf), and
// return the number of blocks done: the Go wrapper converts that block with the Go code, so every
// block gets exactly the Go version's bits, whatever its values.

// perm undoes the lane interleaving of VPACKSSDW + VPACKSSWB: after them dword k of the result
// holds elements 4*perm[k]..; VPERMD with (0,4,1,5,2,6,3,7) puts the 32 bytes in element order.
DATA actperm<>+0(SB)/8, $0x0000000400000000
DATA actperm<>+8(SB)/8, $0x0000000500000001
DATA actperm<>+16(SB)/8, $0x0000000600000002
DATA actperm<>+24(SB)/8, $0x0000000700000003
GLOBL actperm<>(SB), RODATA|NOPTR, $32

// BCAST32 puts the 32-bit constant c into every lane of y, through tmp.
#define BCAST32(c, tmp, x, y) \
	MOVL         c, tmp; \
	VMOVD        tmp, x; \
	VPBROADCASTD x, y

// HMAXD leaves the largest (signed) dword of y in every lane of x, using t as scratch.
#define HMAXD(y, x, t) \
	VEXTRACTI128 $1, y, t; \
	VPMAXSD      t, x, x; \
	VPSHUFD      $0x4e, x, t; \
	VPMAXSD      t, x, x; \
	VPSHUFD      $0xb1, x, t; \
	VPMAXSD      t, x, x

// QPACK converts the products in y0..y3 (elements 0-7, 8-15, 16-23, 24-31) to int32 with rounding
// to nearest even (MXCSR's mode, which Go leaves at its default) and packs them with signed
// saturation into 32 int8 in element order in y0 (Y13 holds actperm). This is ggml's AVX2 packing.
#define QPACK(y0, y1, y2, y3) \
	VCVTPS2DQ y0, y0; \
	VCVTPS2DQ y1, y1; \
	VCVTPS2DQ y2, y2; \
	VCVTPS2DQ y3, y3; \
	VPACKSSDW y1, y0, y0; \
	VPACKSSDW y3, y2, y2; \
	VPACKSSWB y2, y0, y0; \
	VPERMD    y0, Y13, y0

// func actQ8_0AVX2(qs *int8, ds *float32, x *float32, nb int) (done int)
//
// Per block of 32: amax = max |x|; d = fp16(amax/127) as float32; q = rne(x * (127/amax)), or 0
// when amax is 0. The division amax/127 (not a multiplication by 1/127) and the float32 product
// x*id are the Go version's.
TEXT ·actQ8_0AVX2(SB), NOSPLIT, $0-40
	MOVQ qs+0(FP), DI
	MOVQ ds+8(FP), DX
	MOVQ x+16(FP), SI
	MOVQ nb+24(FP), CX
	XORQ AX, AX
	CMPQ CX, $0
	JLE  q80done
	BCAST32($0x7fffffff, R8, X15, Y15)
	MOVL    $0x42fe0000, R8                 // 127.0
	VMOVD   R8, X14
	VMOVDQU actperm<>(SB), Y13

q80loop:
	VMOVUPS 0(SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	VPAND   Y15, Y0, Y4
	VPAND   Y15, Y1, Y5
	VPAND   Y15, Y2, Y6
	VPAND   Y15, Y3, Y7
	VPMAXSD Y5, Y4, Y4
	VPMAXSD Y7, Y6, Y6
	VPMAXSD Y6, Y4, Y4
	HMAXD(Y4, X4, X5)
	VMOVD   X4, R8
	CMPL    R8, $0x7f800000
	JAE     q80done                         // Inf or NaN in the block: the Go code does it
	TESTL   R8, R8
	JZ      q80zero
	VDIVSS  X4, X14, X6                     // id = 127/amax
	VMOVD   X6, R9
	CMPL    R9, $0x7f800000
	JAE     q80done                         // id overflowed: the Go code does it
	VDIVSS  X14, X4, X5                     // amax/127, rounded to fp16 and back
	VCVTPS2PH $0, X5, X5
	VCVTPH2PS X5, X5
	VMOVSS  X5, (DX)
	VBROADCASTSS X6, Y6
	VMULPS  Y6, Y0, Y0
	VMULPS  Y6, Y1, Y1
	VMULPS  Y6, Y2, Y2
	VMULPS  Y6, Y3, Y3
	QPACK(Y0, Y1, Y2, Y3)
	VMOVDQU Y0, (DI)

q80next:
	ADDQ $128, SI
	ADDQ $32, DI
	ADDQ $4, DX
	INCQ AX
	CMPQ AX, CX
	JLT  q80loop

q80done:
	VZEROUPPER
	MOVQ AX, done+32(FP)
	RET

q80zero:
	VPXOR   Y0, Y0, Y0
	VMOVDQU Y0, (DI)
	MOVL    $0, (DX)
	JMP     q80next

// AMAX4 folds the magnitudes of the 32 floats at off(SI) into the accumulators Y0..Y3.
#define AMAX4(off) \
	VPAND   off(SI), Y15, Y4; \
	VPAND   off+32(SI), Y15, Y5; \
	VPAND   off+64(SI), Y15, Y6; \
	VPAND   off+96(SI), Y15, Y7; \
	VPMAXSD Y4, Y0, Y0; \
	VPMAXSD Y5, Y1, Y1; \
	VPMAXSD Y6, Y2, Y2; \
	VPMAXSD Y7, Y3, Y3

// QK32 quantises the 32 floats at 4*off(SI) with the scale in Y6 into the 32 bytes at off(DI) and
// leaves in sad the sums of each 8 quants offset by 128 (VPSADBW of q^0x80 against zero; Y14
// holds bytes of 0x80, Y12 zero).
#define QK32(off, sad) \
	VMULPS    4*off(SI), Y6, Y0; \
	VMULPS    4*off+32(SI), Y6, Y1; \
	VMULPS    4*off+64(SI), Y6, Y2; \
	VMULPS    4*off+96(SI), Y6, Y3; \
	QPACK(Y0, Y1, Y2, Y3); \
	VMOVDQU   Y0, off(DI); \
	VPXOR     Y14, Y0, Y0; \
	VPSADBW   Y12, Y0, sad

// func actQ8KAVX2(qs *int8, ds *float32, bsums *int16, x *float32, nb int) (done int)
//
// Per block of 256: mx = the first element of largest magnitude (the Go loop's strict >), found
// as the integer maximum of the magnitudes and then the first element whose magnitude equals it;
// iscale = -127/mx; q = rne(iscale*x) with the product rounded to float32 (VMULPS, no FMA: the Go
// version's nearestInt(iscale*v) converts the product to float32 before adding), which for finite
// iscale lies within [-127.0001, 127.0001], where rne is what nearestInt's magic-number trick
// computes and no clamp is reached; bsums of each 16; d = 1/iscale. A block of zeros gets zeros.
TEXT ·actQ8KAVX2(SB), NOSPLIT, $0-48
	MOVQ qs+0(FP), DI
	MOVQ ds+8(FP), DX
	MOVQ bsums+16(FP), BX
	MOVQ x+24(FP), SI
	MOVQ nb+32(FP), CX
	XORQ AX, AX
	CMPQ CX, $0
	JLE  qkdone
	BCAST32($0x7fffffff, R8, X15, Y15)
	BCAST32($0x80808080, R8, X14, Y14)
	BCAST32($2048, R8, X11, Y11)
	VMOVDQU actperm<>(SB), Y13
	VPXOR   Y12, Y12, Y12

qkloop:
	VPAND   0(SI), Y15, Y0
	VPAND   32(SI), Y15, Y1
	VPAND   64(SI), Y15, Y2
	VPAND   96(SI), Y15, Y3
	AMAX4(128)
	AMAX4(256)
	AMAX4(384)
	AMAX4(512)
	AMAX4(640)
	AMAX4(768)
	AMAX4(896)
	VPMAXSD Y1, Y0, Y0
	VPMAXSD Y3, Y2, Y2
	VPMAXSD Y2, Y0, Y0
	HMAXD(Y0, X0, X1)
	VMOVD   X0, R8
	CMPL    R8, $0x7f800000
	JAE     qkdone                          // Inf or NaN in the block: the Go code does it
	TESTL   R8, R8
	JZ      qkzero

	// The first element whose magnitude is amax, 32 elements at a time.
	VPBROADCASTD X0, Y0
	XORQ R10, R10

qkfind:
	VPAND     0(SI)(R10*1), Y15, Y1
	VPAND     32(SI)(R10*1), Y15, Y2
	VPAND     64(SI)(R10*1), Y15, Y3
	VPAND     96(SI)(R10*1), Y15, Y4
	VPCMPEQD  Y0, Y1, Y1
	VPCMPEQD  Y0, Y2, Y2
	VPCMPEQD  Y0, Y3, Y3
	VPCMPEQD  Y0, Y4, Y4
	VMOVMSKPS Y1, R9
	VMOVMSKPS Y2, R11
	SHLL      $8, R11
	ORL       R11, R9
	VMOVMSKPS Y3, R11
	SHLL      $16, R11
	ORL       R11, R9
	VMOVMSKPS Y4, R11
	SHLL      $24, R11
	ORL       R11, R9
	TESTL     R9, R9
	JNZ       qkfound
	ADDQ      $128, R10
	CMPQ      R10, $1024
	JLT       qkfind
	JMP       qkdone                        // not reached: amax is some element's magnitude

qkfound:
	BSFL   R9, R9
	SHRQ   $2, R10
	ADDQ   R9, R10
	VMOVSS (SI)(R10*4), X1                  // mx
	MOVL   $0xc2fe0000, R8                  // -127.0
	VMOVD  R8, X2
	VDIVSS X1, X2, X6                       // iscale = -127/mx
	VMOVD  X6, R9
	ANDL   $0x7fffffff, R9
	CMPL   R9, $0x7f800000
	JAE    qkdone                           // iscale overflowed: the Go code does it
	MOVL   $0x3f800000, R8                  // 1.0
	VMOVD  R8, X2
	VDIVSS X6, X2, X2                       // d = 1/iscale
	VMOVSS X2, (DX)
	VBROADCASTSS X6, Y6

	QK32(0, Y7)
	QK32(32, Y8)
	VPHADDD Y8, Y7, Y7
	QK32(64, Y8)
	QK32(96, Y9)
	VPHADDD Y9, Y8, Y8
	VPHADDD Y8, Y7, Y7                      // sums of groups 0,2,4,6 | 1,3,5,7
	QK32(128, Y8)
	QK32(160, Y9)
	VPHADDD Y9, Y8, Y8
	QK32(192, Y9)
	QK32(224, Y10)
	VPHADDD Y10, Y9, Y9
	VPHADDD Y9, Y8, Y8                      // sums of groups 8,10,12,14 | 9,11,13,15
	VPSUBD  Y11, Y7, Y7                     // less 16*128
	VPSUBD  Y11, Y8, Y8
	VPACKSSDW Y8, Y7, Y7                    // words 0,2,..,14 | 1,3,..,15
	VEXTRACTI128 $1, Y7, X8
	VPUNPCKLWD X8, X7, X9
	VPUNPCKHWD X8, X7, X10
	VMOVDQU X9, (BX)
	VMOVDQU X10, 16(BX)

qknext:
	ADDQ $1024, SI
	ADDQ $256, DI
	ADDQ $32, BX
	ADDQ $4, DX
	INCQ AX
	CMPQ AX, CX
	JLT  qkloop

qkdone:
	VZEROUPPER
	MOVQ AX, done+40(FP)
	RET

qkzero:
	VPXOR   Y0, Y0, Y0
	VMOVDQU Y0, 0(DI)
	VMOVDQU Y0, 32(DI)
	VMOVDQU Y0, 64(DI)
	VMOVDQU Y0, 96(DI)
	VMOVDQU Y0, 128(DI)
	VMOVDQU Y0, 160(DI)
	VMOVDQU Y0, 192(DI)
	VMOVDQU Y0, 224(DI)
	VMOVDQU Y0, (BX)
	MOVL    $0, (DX)
	JMP     qknext

// F16RT rounds the floats in r to fp16 (nearest even, whatever MXCSR says) and back, through h.
// F16C's conversions are IEEE's: subnormal halves, overflow to Inf, NaNs quieted with the sign and
// the top ten payload bits kept, exactly as F32ToF16 and f16Table do.
#define F16RT(r, h) \
	VCVTPS2PH $0, r, h; \
	VCVTPH2PS h, r

// func actRoundF16AVX2(dst, src *float32, n int)
TEXT ·actRoundF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	XORQ AX, AX
	MOVQ CX, DX
	ANDQ $-32, DX

f16loop32:
	CMPQ    AX, DX
	JGE     f16tail8
	VMOVUPS 0(SI)(AX*4), Y0
	VMOVUPS 32(SI)(AX*4), Y1
	VMOVUPS 64(SI)(AX*4), Y2
	VMOVUPS 96(SI)(AX*4), Y3
	F16RT(Y0, X4)
	F16RT(Y1, X5)
	F16RT(Y2, X6)
	F16RT(Y3, X7)
	VMOVUPS Y0, 0(DI)(AX*4)
	VMOVUPS Y1, 32(DI)(AX*4)
	VMOVUPS Y2, 64(DI)(AX*4)
	VMOVUPS Y3, 96(DI)(AX*4)
	ADDQ    $32, AX
	JMP     f16loop32

f16tail8:
	MOVQ CX, DX
	ANDQ $-8, DX

f16loop8:
	CMPQ    AX, DX
	JGE     f16tail1
	VMOVUPS (SI)(AX*4), Y0
	F16RT(Y0, X4)
	VMOVUPS Y0, (DI)(AX*4)
	ADDQ    $8, AX
	JMP     f16loop8

f16tail1:
	CMPQ   AX, CX
	JGE    f16done
	VMOVSS (SI)(AX*4), X0
	F16RT(X0, X4)
	VMOVSS X0, (DI)(AX*4)
	INCQ   AX
	JMP    f16tail1

f16done:
	VZEROUPPER
	RET

// BF16RT rounds the floats in r to bf16 and back as F32ToBF16 does: non-NaN bits b become
// (b + 0x7fff + (b>>16)&1) &^ 0xffff (which carries into Inf where it should; only NaNs could wrap
// around, and they are replaced), NaNs (|b| > 0x7f800000) become (b &^ 0xffff) | 0x400000, quiet.
// Y15 holds 0x7fffffff, Y14 0x7f800000, Y13 1, Y12 0x7fff, Y11 0xffff0000, Y10 0x00400000; t0..t2
// are scratch.
#define BF16RT(r, t0, t1, t2) \
	VPSRLD    $16, r, t0; \
	VPAND     Y13, t0, t0; \
	VPADDD    Y12, r, t1; \
	VPADDD    t0, t1, t1; \
	VPAND     Y11, t1, t1; \
	VPAND     Y15, r, t0; \
	VPCMPGTD  Y14, t0, t0; \
	VPAND     Y11, r, t2; \
	VPOR      Y10, t2, t2; \
	VPBLENDVB t0, t2, t1, r

// func actRoundBF16AVX2(dst, src *float32, n int)
TEXT ·actRoundBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	BCAST32($0x7fffffff, R8, X15, Y15)
	BCAST32($0x7f800000, R8, X14, Y14)
	BCAST32($1, R8, X13, Y13)
	BCAST32($0x7fff, R8, X12, Y12)
	BCAST32($0xffff0000, R8, X11, Y11)
	BCAST32($0x00400000, R8, X10, Y10)
	XORQ AX, AX
	MOVQ CX, DX
	ANDQ $-16, DX

bf16loop16:
	CMPQ    AX, DX
	JGE     bf16tail8
	VMOVDQU 0(SI)(AX*4), Y0
	VMOVDQU 32(SI)(AX*4), Y1
	BF16RT(Y0, Y2, Y3, Y4)
	BF16RT(Y1, Y5, Y6, Y7)
	VMOVDQU Y0, 0(DI)(AX*4)
	VMOVDQU Y1, 32(DI)(AX*4)
	ADDQ    $16, AX
	JMP     bf16loop16

bf16tail8:
	MOVQ CX, DX
	ANDQ $-8, DX

bf16loop8:
	CMPQ    AX, DX
	JGE     bf16tail1
	VMOVDQU (SI)(AX*4), Y0
	BF16RT(Y0, Y2, Y3, Y4)
	VMOVDQU Y0, (DI)(AX*4)
	ADDQ    $8, AX
	JMP     bf16loop8

bf16tail1:
	CMPQ   AX, CX
	JGE    bf16done
	VMOVD  (SI)(AX*4), X0
	BF16RT(Y0, Y2, Y3, Y4)
	VMOVD  X0, (DI)(AX*4)
	INCQ   AX
	JMP    bf16tail1

bf16done:
	VZEROUPPER
	RET
