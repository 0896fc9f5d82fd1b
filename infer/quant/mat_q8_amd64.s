#include "textflag.h"
#include "funcdata.h"

// The kernels follow ggml's AVX2 ggml_vec_dot_q8_0_q8_0 and ggml_vec_dot_q4_0_q8_0 operation for
// operation, so that their results match llama.cpp's bit for bit: per block, the exact integer dot
// in eight int32 lanes (|w| times y signed by w, VPMADDUBSW, VPMADDWD against ones; integers are
// exact, so any way to the same lanes will do, see YSUM8), converted to float and added with one
// FMA into a single eight-lane accumulator per (row, vector), using the float32 scale
// d = fp16(w.d) * y.d; blocks in order; then hsum_float_8. Several rows and vectors
// are computed at once, each with its own accumulator and the same operations, so a result does
// not depend on the rows or vectors computed with it. Only VEX encodings are used and every kernel
// ends with VZEROUPPER: legacy SSE code after dirty upper halves costs a state transition.

// PF is how far ahead of each row's current block the weights are prefetched, in bytes.
#define PF 512

DATA ones16<>+0(SB)/8, $0x0001000100010001
DATA ones16<>+8(SB)/8, $0x0001000100010001
DATA ones16<>+16(SB)/8, $0x0001000100010001
DATA ones16<>+24(SB)/8, $0x0001000100010001
GLOBL ones16<>(SB), RODATA|NOPTR, $32

DATA nibbles<>+0(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nibbles<>+8(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nibbles<>+16(SB)/8, $0x0f0f0f0f0f0f0f0f
DATA nibbles<>+24(SB)/8, $0x0f0f0f0f0f0f0f0f
GLOBL nibbles<>(SB), RODATA|NOPTR, $32

DATA eights<>+0(SB)/8, $0x0808080808080808
DATA eights<>+8(SB)/8, $0x0808080808080808
DATA eights<>+16(SB)/8, $0x0808080808080808
DATA eights<>+24(SB)/8, $0x0808080808080808
GLOBL eights<>(SB), RODATA|NOPTR, $32

DATA shifts<>+0(SB)/8, $0
DATA shifts<>+8(SB)/8, $0
DATA shifts<>+16(SB)/8, $0x0000000400000004
DATA shifts<>+24(SB)/8, $0x0000000400000004
GLOBL shifts<>(SB), RODATA|NOPTR, $32

// LOADQ8 loads a Q8_0 block's 32 quants into x and their magnitudes into ax.
#define LOADQ8(src, x, ax) \
	VMOVDQU src, x; \
	VPSIGNB x, x, ax

// LOADQ4 unpacks a Q4_0 block's 16 bytes into ggml's bytes_from_nibbles_32 order (low nibbles, then
// high nibbles: the bytes go to both halves and the upper half is shifted right by 4), offsets them
// to -8..7 in x and puts their magnitudes in ax.
#define LOADQ4(src, x, ax) \
	VBROADCASTI128 src, x; \
	VPSRLVD        shifts<>(SB), x, x; \
	VPAND          nibbles<>(SB), x, x; \
	VPSUBB         eights<>(SB), x, x; \
	VPSIGNB        x, x, ax

// PAIR adds one block of one (row, vector) pair to acc: y the vector's quants, x and ax the row's
// quants and their magnitudes, dt the address of the pair's block scale; Y15 holds sixteen int16 ones.
#define PAIR(y, x, ax, dt, acc) \
	VPSIGNB      x, y, Y13; \
	VPMADDUBSW   Y13, ax, Y13; \
	VPMADDWD     Y15, Y13, Y13; \
	VCVTDQ2PS    Y13, Y13; \
	VBROADCASTSS dt, Y14; \
	VFMADD231PS  Y14, Y13, acc

// For one vector, the Q4_0 kernel gets ggml's integer lanes another way, shared between rows:
// sum((q-8)*y) = sum(q*y) - 8*sum(y) exactly, with q = 0..15 unsigned, so no sign operations are
// needed and 8*sum(y) is computed once per block for all rows. YSUM8 puts the 8*sum(y) lanes of the
// block at y into ys (Y4 holds bytes of 8); LOADQ4U unpacks the nibbles to 0..15 as LOADQ4 does (Y5
// holds the nibble mask, Y6 the shifts); PAIRU is PAIR for them.
#define YSUM8(y, ys) \
	VPMADDUBSW y, Y4, ys; \
	VPMADDWD   Y15, ys, ys

#define LOADQ4U(src, q) \
	VBROADCASTI128 src, q; \
	VPSRLVD        Y6, q, q; \
	VPAND          Y5, q, q

#define PAIRU(y, q, ys, dt, acc) \
	VPMADDUBSW   y, q, Y13; \
	VPMADDWD     Y15, Y13, Y13; \
	VPSUBD       ys, Y13, Y13; \
	VCVTDQ2PS    Y13, Y13; \
	VBROADCASTSS dt, Y14; \
	VFMADD231PS  Y14, Y13, acc

// WD8Q8 and WD8Q4 convert the fp16 scales of the eight blocks at row address b into Y12, gathered
// in general registers t0 and t1: the vector pipes are the kernels' bottleneck.
#define WD8Q8(b, t0, t1) \
	MOVWQZX   102 b, t0; \
	SHLQ      $16, t0; \
	MOVW      68 b, t0; \
	SHLQ      $16, t0; \
	MOVW      34 b, t0; \
	SHLQ      $16, t0; \
	MOVW      0 b, t0; \
	MOVWQZX   238 b, t1; \
	SHLQ      $16, t1; \
	MOVW      204 b, t1; \
	SHLQ      $16, t1; \
	MOVW      170 b, t1; \
	SHLQ      $16, t1; \
	MOVW      136 b, t1; \
	VMOVQ     t0, X12; \
	VPINSRQ   $1, t1, X12, X12; \
	VCVTPH2PS X12, Y12

#define WD8Q4(b, t0, t1) \
	MOVWQZX   54 b, t0; \
	SHLQ      $16, t0; \
	MOVW      36 b, t0; \
	SHLQ      $16, t0; \
	MOVW      18 b, t0; \
	SHLQ      $16, t0; \
	MOVW      0 b, t0; \
	MOVWQZX   126 b, t1; \
	SHLQ      $16, t1; \
	MOVW      108 b, t1; \
	SHLQ      $16, t1; \
	MOVW      90 b, t1; \
	SHLQ      $16, t1; \
	MOVW      72 b, t1; \
	VMOVQ     t0, X12; \
	VPINSRQ   $1, t1, X12, X12; \
	VCVTPH2PS X12, Y12

// DT8 stores the eight block scales wd*yd of one (row, vector) pair: yd the address of the vector's
// eight float32 scales, wd in Y12.
#define DT8(yd, dt) \
	VMULPS  yd, Y12, Y14; \
	VMOVUPS Y14, dt

// WD1 converts one block's fp16 scale into X12; DT1 stores one block scale wd*yd.
#define WD1(src) \
	VPBROADCASTW src, X12; \
	VCVTPH2PS    X12, X12

#define DT1(yd, dt) \
	VMULSS yd, X12, X14; \
	VMOVSS X14, dt

// HSUM is ggml's hsum_float_8: high half plus low half, then movehl, then movehdup; the sum goes
// to dst.
#define HSUM(y, x, dst) \
	VEXTRACTF128 $1, y, X13; \
	VADDPS       x, X13, X13; \
	VMOVHLPS     X13, X13, X14; \
	VADDPS       X14, X13, X13; \
	VMOVSHDUP    X13, X14; \
	VADDSS       X14, X13, X13; \
	VMOVSS       X13, dst

// Block scales live in the frame, 32 bytes (eight blocks) per (row, vector) pair. A group of
// eight blocks fills them with one multiply per pair; the last group of g < 8 blocks is stored at
// the end of each slot, so that the block loop, counting CX from -g up to 0, reads slot s at
// s*32+32(SP)(CX*4) in either case.

// func q8_0Vec1AVX2(dst *float32, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)
//
// One vector against nrows rows, four rows at a time (four independent accumulator chains), then
// one at a time. The four rows come from the four quarters of the first nrows&^3 rows, so that each
// is a long sequential stream for the prefetchers: R9 holds the distance between the streams. The
// frame holds each row's block scales d = wd*yd for up to eight blocks, then the quarter's size in
// bytes of dst.
TEXT ·q8_0Vec1AVX2(SB), NOSPLIT, $136-56
	VMOVDQU ones16<>(SB), Y15
	MOVQ dst+0(FP), AX
	MOVQ rows+8(FP), BX
	MOVQ nrows+24(FP), R13
	SHRQ $2, R13
	JZ   q80v1quaddone
	MOVQ R13, R9
	IMULQ rowBytes+16(FP), R9
	LEAQ (BX)(R9*2), R8
	MOVQ R13, DX
	SHLQ $2, DX
	MOVQ DX, 128(SP)

q80v1quad:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ qs+32(FP), SI
	MOVQ d+40(FP), DI
	MOVQ nb+48(FP), R12

q80v1quadgroup:
	CMPQ R12, $8
	JB   q80v1quadtail
	WD8Q8((BX), R10, R11)
	DT8((DI), 0(SP))
	WD8Q8((BX)(R9*1), R10, R11)
	DT8((DI), 32(SP))
	WD8Q8((R8), R10, R11)
	DT8((DI), 64(SP))
	WD8Q8((R8)(R9*1), R10, R11)
	DT8((DI), 96(SP))
	ADDQ $32, DI
	SUBQ $8, R12
	MOVQ $-8, CX
	JMP  q80v1quadblocks

q80v1quadtail:
	MOVQ R12, CX
	NEGQ CX
	MOVQ BX, DX
	MOVQ R8, R10

q80v1quadtailk:
	WD1((DX))
	DT1((DI), 32(SP)(CX*4))
	WD1((DX)(R9*1))
	DT1((DI), 64(SP)(CX*4))
	WD1((R10))
	DT1((DI), 96(SP)(CX*4))
	WD1((R10)(R9*1))
	DT1((DI), 128(SP)(CX*4))
	ADDQ $34, DX
	ADDQ $34, R10
	ADDQ $4, DI
	INCQ CX
	JNZ  q80v1quadtailk
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

q80v1quadblocks:
	PREFETCHT0 PF(BX)
	PREFETCHT0 PF(BX)(R9*1)
	PREFETCHT0 PF(R8)
	PREFETCHT0 PF(R8)(R9*1)
	VMOVDQU (SI), Y8
	LOADQ8(2(BX), Y9, Y10)
	PAIR(Y8, Y9, Y10, 32(SP)(CX*4), Y0)
	LOADQ8(2(BX)(R9*1), Y11, Y12)
	PAIR(Y8, Y11, Y12, 64(SP)(CX*4), Y1)
	LOADQ8(2(R8), Y9, Y10)
	PAIR(Y8, Y9, Y10, 96(SP)(CX*4), Y2)
	LOADQ8(2(R8)(R9*1), Y11, Y12)
	PAIR(Y8, Y11, Y12, 128(SP)(CX*4), Y3)
	ADDQ $32, SI
	ADDQ $34, BX
	ADDQ $34, R8
	INCQ CX
	JNZ  q80v1quadblocks
	TESTQ R12, R12
	JNZ   q80v1quadgroup

	MOVQ 128(SP), DX
	LEAQ (AX)(DX*2), R10
	HSUM(Y0, X0, 0(AX))
	HSUM(Y1, X1, 0(AX)(DX*1))
	HSUM(Y2, X2, 0(R10))
	HSUM(Y3, X3, 0(R10)(DX*1))
	ADDQ $4, AX
	DECQ R13
	JNZ  q80v1quad

	LEAQ (BX)(R9*2), BX
	ADDQ R9, BX
	LEAQ (AX)(DX*2), AX
	ADDQ DX, AX

q80v1quaddone:
	MOVQ nrows+24(FP), R13
	ANDQ $3, R13

q80v1one:
	TESTQ R13, R13
	JZ    q80v1done
	VXORPS Y0, Y0, Y0
	MOVQ qs+32(FP), SI
	MOVQ d+40(FP), DI
	MOVQ nb+48(FP), R12

q80v1onegroup:
	CMPQ R12, $8
	JB   q80v1onetail
	WD8Q8((BX), R10, R11)
	DT8((DI), 0(SP))
	ADDQ $32, DI
	SUBQ $8, R12
	MOVQ $-8, CX
	JMP  q80v1oneblocks

q80v1onetail:
	MOVQ R12, CX
	NEGQ CX
	MOVQ BX, DX

q80v1onetailk:
	WD1((DX))
	DT1((DI), 32(SP)(CX*4))
	ADDQ $34, DX
	ADDQ $4, DI
	INCQ CX
	JNZ  q80v1onetailk
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

q80v1oneblocks:
	PREFETCHT0 PF(BX)
	VMOVDQU (SI), Y8
	LOADQ8(2(BX), Y9, Y10)
	PAIR(Y8, Y9, Y10, 32(SP)(CX*4), Y0)
	ADDQ $32, SI
	ADDQ $34, BX
	INCQ CX
	JNZ  q80v1oneblocks
	TESTQ R12, R12
	JNZ   q80v1onegroup

	HSUM(Y0, X0, 0(AX))
	ADDQ $4, AX
	DECQ R13
	JMP  q80v1one

q80v1done:
	VZEROUPPER
	RET

// func q4_0Vec1AVX2(dst *float32, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)
//
// One vector against nrows rows, four rows at a time (four independent accumulator chains), then
// one at a time. The four rows come from the four quarters of the first nrows&^3 rows, so that each
// is a long sequential stream for the prefetchers: R9 holds the distance between the streams. The
// frame holds each row's block scales d = wd*yd for up to eight blocks, then the quarter's size in
// bytes of dst. The integer lanes come from the unsigned nibbles (YSUM8).
TEXT ·q4_0Vec1AVX2(SB), NOSPLIT, $136-56
	VMOVDQU ones16<>(SB), Y15
	VMOVDQU eights<>(SB), Y4
	VMOVDQU nibbles<>(SB), Y5
	VMOVDQU shifts<>(SB), Y6
	MOVQ dst+0(FP), AX
	MOVQ rows+8(FP), BX
	MOVQ nrows+24(FP), R13
	SHRQ $2, R13
	JZ   q40v1quaddone
	MOVQ R13, R9
	IMULQ rowBytes+16(FP), R9
	LEAQ (BX)(R9*2), R8
	MOVQ R13, DX
	SHLQ $2, DX
	MOVQ DX, 128(SP)

q40v1quad:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ qs+32(FP), SI
	MOVQ d+40(FP), DI
	MOVQ nb+48(FP), R12

q40v1quadgroup:
	CMPQ R12, $8
	JB   q40v1quadtail
	WD8Q4((BX), R10, R11)
	DT8((DI), 0(SP))
	WD8Q4((BX)(R9*1), R10, R11)
	DT8((DI), 32(SP))
	WD8Q4((R8), R10, R11)
	DT8((DI), 64(SP))
	WD8Q4((R8)(R9*1), R10, R11)
	DT8((DI), 96(SP))
	ADDQ $32, DI
	SUBQ $8, R12
	MOVQ $-8, CX
	JMP  q40v1quadblocks

q40v1quadtail:
	MOVQ R12, CX
	NEGQ CX
	MOVQ BX, DX
	MOVQ R8, R10

q40v1quadtailk:
	WD1((DX))
	DT1((DI), 32(SP)(CX*4))
	WD1((DX)(R9*1))
	DT1((DI), 64(SP)(CX*4))
	WD1((R10))
	DT1((DI), 96(SP)(CX*4))
	WD1((R10)(R9*1))
	DT1((DI), 128(SP)(CX*4))
	ADDQ $18, DX
	ADDQ $18, R10
	ADDQ $4, DI
	INCQ CX
	JNZ  q40v1quadtailk
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

q40v1quadblocks:
	PREFETCHT0 PF(BX)
	PREFETCHT0 PF(BX)(R9*1)
	PREFETCHT0 PF(R8)
	PREFETCHT0 PF(R8)(R9*1)
	VMOVDQU (SI), Y8
	YSUM8(Y8, Y9)
	LOADQ4U(2(BX), Y10)
	PAIRU(Y8, Y10, Y9, 32(SP)(CX*4), Y0)
	LOADQ4U(2(BX)(R9*1), Y11)
	PAIRU(Y8, Y11, Y9, 64(SP)(CX*4), Y1)
	LOADQ4U(2(R8), Y10)
	PAIRU(Y8, Y10, Y9, 96(SP)(CX*4), Y2)
	LOADQ4U(2(R8)(R9*1), Y11)
	PAIRU(Y8, Y11, Y9, 128(SP)(CX*4), Y3)
	ADDQ $32, SI
	ADDQ $18, BX
	ADDQ $18, R8
	INCQ CX
	JNZ  q40v1quadblocks
	TESTQ R12, R12
	JNZ   q40v1quadgroup

	MOVQ 128(SP), DX
	LEAQ (AX)(DX*2), R10
	HSUM(Y0, X0, 0(AX))
	HSUM(Y1, X1, 0(AX)(DX*1))
	HSUM(Y2, X2, 0(R10))
	HSUM(Y3, X3, 0(R10)(DX*1))
	ADDQ $4, AX
	DECQ R13
	JNZ  q40v1quad

	LEAQ (BX)(R9*2), BX
	ADDQ R9, BX
	LEAQ (AX)(DX*2), AX
	ADDQ DX, AX

q40v1quaddone:
	MOVQ nrows+24(FP), R13
	ANDQ $3, R13

q40v1one:
	TESTQ R13, R13
	JZ    q40v1done
	VXORPS Y0, Y0, Y0
	MOVQ qs+32(FP), SI
	MOVQ d+40(FP), DI
	MOVQ nb+48(FP), R12

q40v1onegroup:
	CMPQ R12, $8
	JB   q40v1onetail
	WD8Q4((BX), R10, R11)
	DT8((DI), 0(SP))
	ADDQ $32, DI
	SUBQ $8, R12
	MOVQ $-8, CX
	JMP  q40v1oneblocks

q40v1onetail:
	MOVQ R12, CX
	NEGQ CX
	MOVQ BX, DX

q40v1onetailk:
	WD1((DX))
	DT1((DI), 32(SP)(CX*4))
	ADDQ $18, DX
	ADDQ $4, DI
	INCQ CX
	JNZ  q40v1onetailk
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

q40v1oneblocks:
	PREFETCHT0 PF(BX)
	VMOVDQU (SI), Y8
	YSUM8(Y8, Y9)
	LOADQ4U(2(BX), Y10)
	PAIRU(Y8, Y10, Y9, 32(SP)(CX*4), Y0)
	ADDQ $32, SI
	ADDQ $18, BX
	INCQ CX
	JNZ  q40v1oneblocks
	TESTQ R12, R12
	JNZ   q40v1onegroup

	HSUM(Y0, X0, 0(AX))
	ADDQ $4, AX
	DECQ R13
	JMP  q40v1one

q40v1done:
	VZEROUPPER
	RET

// func q8_0Vec4AVX2(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)
//
// Four consecutive vectors against nrows rows, two rows at a time (eight accumulators: each row's
// loaded quants and magnitudes serve four vectors, each vector's quants two rows), then one at a
// time. The two rows come from the two halves of the first nrows&^1 rows, each a sequential stream
// (R9 holds the distance between them). The frame holds the eight (row, vector) scales for up to
// eight blocks, the dst cursor and the half's size in bytes of dst.
TEXT ·q8_0Vec4AVX2(SB), NOSPLIT, $272-64
	VMOVDQU ones16<>(SB), Y15
	MOVQ dst+0(FP), AX
	MOVQ AX, 256(SP)
	MOVQ rows+16(FP), BX
	MOVQ nb+56(FP), R10
	MOVQ R10, DX
	SHLQ $5, DX
	SHLQ $2, R10
	MOVQ nrows+32(FP), R13
	SHRQ $1, R13
	JZ   q80v4pairdone
	MOVQ R13, R9
	IMULQ rowBytes+24(FP), R9
	LEAQ (R13*4), AX
	MOVQ AX, 264(SP)

q80v4pair:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVQ qs+40(FP), SI
	LEAQ (SI)(DX*2), R8
	MOVQ d+48(FP), DI
	LEAQ (DI)(R10*2), R11
	MOVQ nb+56(FP), R12

q80v4pairgroup:
	CMPQ R12, $8
	JB   q80v4pairtail
	WD8Q8((BX), AX, CX)
	DT8((DI), 0(SP))
	DT8((DI)(R10*1), 32(SP))
	DT8((R11), 64(SP))
	DT8((R11)(R10*1), 96(SP))
	WD8Q8((BX)(R9*1), AX, CX)
	DT8((DI), 128(SP))
	DT8((DI)(R10*1), 160(SP))
	DT8((R11), 192(SP))
	DT8((R11)(R10*1), 224(SP))
	ADDQ $32, DI
	ADDQ $32, R11
	SUBQ $8, R12
	MOVQ $-8, CX
	JMP  q80v4pairblocks

q80v4pairtail:
	MOVQ R12, CX
	NEGQ CX
	MOVQ BX, AX

q80v4pairtailk:
	WD1((AX))
	DT1((DI), 32(SP)(CX*4))
	DT1((DI)(R10*1), 64(SP)(CX*4))
	DT1((R11), 96(SP)(CX*4))
	DT1((R11)(R10*1), 128(SP)(CX*4))
	WD1((AX)(R9*1))
	DT1((DI), 160(SP)(CX*4))
	DT1((DI)(R10*1), 192(SP)(CX*4))
	DT1((R11), 224(SP)(CX*4))
	DT1((R11)(R10*1), 256(SP)(CX*4))
	ADDQ $34, AX
	ADDQ $4, DI
	ADDQ $4, R11
	INCQ CX
	JNZ  q80v4pairtailk
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

q80v4pairblocks:
	PREFETCHT0 PF(BX)
	PREFETCHT0 PF(BX)(R9*1)
	LOADQ8(2(BX), Y8, Y10)
	LOADQ8(2(BX)(R9*1), Y9, Y11)
	VMOVDQU (SI), Y12
	PAIR(Y12, Y8, Y10, 32(SP)(CX*4), Y0)
	PAIR(Y12, Y9, Y11, 160(SP)(CX*4), Y4)
	VMOVDQU (SI)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 64(SP)(CX*4), Y1)
	PAIR(Y12, Y9, Y11, 192(SP)(CX*4), Y5)
	VMOVDQU (R8), Y12
	PAIR(Y12, Y8, Y10, 96(SP)(CX*4), Y2)
	PAIR(Y12, Y9, Y11, 224(SP)(CX*4), Y6)
	VMOVDQU (R8)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 128(SP)(CX*4), Y3)
	PAIR(Y12, Y9, Y11, 256(SP)(CX*4), Y7)
	ADDQ $34, BX
	ADDQ $32, SI
	ADDQ $32, R8
	INCQ CX
	JNZ  q80v4pairblocks
	TESTQ R12, R12
	JNZ   q80v4pairgroup

	MOVQ 256(SP), AX
	MOVQ ldd+8(FP), CX
	SHLQ $2, CX
	LEAQ (AX)(CX*2), R12
	HSUM(Y0, X0, 0(AX))
	HSUM(Y1, X1, 0(AX)(CX*1))
	HSUM(Y2, X2, 0(R12))
	HSUM(Y3, X3, 0(R12)(CX*1))
	ADDQ 264(SP), AX
	ADDQ 264(SP), R12
	HSUM(Y4, X4, 0(AX))
	HSUM(Y5, X5, 0(AX)(CX*1))
	HSUM(Y6, X6, 0(R12))
	HSUM(Y7, X7, 0(R12)(CX*1))
	MOVQ 256(SP), AX
	ADDQ $4, AX
	MOVQ AX, 256(SP)
	DECQ R13
	JNZ  q80v4pair

	ADDQ R9, BX
	ADDQ 264(SP), AX
	MOVQ AX, 256(SP)

q80v4pairdone:
	MOVQ nrows+32(FP), R13
	ANDQ $1, R13

q80v4one:
	TESTQ R13, R13
	JZ    q80v4done
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ qs+40(FP), SI
	LEAQ (SI)(DX*2), R8
	MOVQ d+48(FP), DI
	LEAQ (DI)(R10*2), R11
	MOVQ nb+56(FP), R12

q80v4onegroup:
	CMPQ R12, $8
	JB   q80v4onetail
	WD8Q8((BX), AX, CX)
	DT8((DI), 0(SP))
	DT8((DI)(R10*1), 32(SP))
	DT8((R11), 64(SP))
	DT8((R11)(R10*1), 96(SP))
	ADDQ $32, DI
	ADDQ $32, R11
	SUBQ $8, R12
	MOVQ $-8, CX
	JMP  q80v4oneblocks

q80v4onetail:
	MOVQ R12, CX
	NEGQ CX
	MOVQ BX, AX

q80v4onetailk:
	WD1((AX))
	DT1((DI), 32(SP)(CX*4))
	DT1((DI)(R10*1), 64(SP)(CX*4))
	DT1((R11), 96(SP)(CX*4))
	DT1((R11)(R10*1), 128(SP)(CX*4))
	ADDQ $34, AX
	ADDQ $4, DI
	ADDQ $4, R11
	INCQ CX
	JNZ  q80v4onetailk
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

q80v4oneblocks:
	PREFETCHT0 PF(BX)
	LOADQ8(2(BX), Y8, Y10)
	VMOVDQU (SI), Y12
	PAIR(Y12, Y8, Y10, 32(SP)(CX*4), Y0)
	VMOVDQU (SI)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 64(SP)(CX*4), Y1)
	VMOVDQU (R8), Y12
	PAIR(Y12, Y8, Y10, 96(SP)(CX*4), Y2)
	VMOVDQU (R8)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 128(SP)(CX*4), Y3)
	ADDQ $34, BX
	ADDQ $32, SI
	ADDQ $32, R8
	INCQ CX
	JNZ  q80v4oneblocks
	TESTQ R12, R12
	JNZ   q80v4onegroup

	MOVQ 256(SP), AX
	MOVQ ldd+8(FP), CX
	SHLQ $2, CX
	LEAQ (AX)(CX*2), R12
	HSUM(Y0, X0, 0(AX))
	HSUM(Y1, X1, 0(AX)(CX*1))
	HSUM(Y2, X2, 0(R12))
	HSUM(Y3, X3, 0(R12)(CX*1))
	MOVQ 256(SP), AX
	ADDQ $4, AX
	MOVQ AX, 256(SP)
	DECQ R13
	JMP  q80v4one

q80v4done:
	VZEROUPPER
	RET

// func q4_0Vec4AVX2(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb int)
//
// Four consecutive vectors against nrows rows, two rows at a time (eight accumulators: each row's
// loaded quants and magnitudes serve four vectors, each vector's quants two rows), then one at a
// time. The two rows come from the two halves of the first nrows&^1 rows, each a sequential stream
// (R9 holds the distance between them). The frame holds the eight (row, vector) scales for up to
// eight blocks, the dst cursor and the half's size in bytes of dst.
TEXT ·q4_0Vec4AVX2(SB), NOSPLIT, $272-64
	VMOVDQU ones16<>(SB), Y15
	MOVQ dst+0(FP), AX
	MOVQ AX, 256(SP)
	MOVQ rows+16(FP), BX
	MOVQ nb+56(FP), R10
	MOVQ R10, DX
	SHLQ $5, DX
	SHLQ $2, R10
	MOVQ nrows+32(FP), R13
	SHRQ $1, R13
	JZ   q40v4pairdone
	MOVQ R13, R9
	IMULQ rowBytes+24(FP), R9
	LEAQ (R13*4), AX
	MOVQ AX, 264(SP)

q40v4pair:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVQ qs+40(FP), SI
	LEAQ (SI)(DX*2), R8
	MOVQ d+48(FP), DI
	LEAQ (DI)(R10*2), R11
	MOVQ nb+56(FP), R12

q40v4pairgroup:
	CMPQ R12, $8
	JB   q40v4pairtail
	WD8Q4((BX), AX, CX)
	DT8((DI), 0(SP))
	DT8((DI)(R10*1), 32(SP))
	DT8((R11), 64(SP))
	DT8((R11)(R10*1), 96(SP))
	WD8Q4((BX)(R9*1), AX, CX)
	DT8((DI), 128(SP))
	DT8((DI)(R10*1), 160(SP))
	DT8((R11), 192(SP))
	DT8((R11)(R10*1), 224(SP))
	ADDQ $32, DI
	ADDQ $32, R11
	SUBQ $8, R12
	MOVQ $-8, CX
	JMP  q40v4pairblocks

q40v4pairtail:
	MOVQ R12, CX
	NEGQ CX
	MOVQ BX, AX

q40v4pairtailk:
	WD1((AX))
	DT1((DI), 32(SP)(CX*4))
	DT1((DI)(R10*1), 64(SP)(CX*4))
	DT1((R11), 96(SP)(CX*4))
	DT1((R11)(R10*1), 128(SP)(CX*4))
	WD1((AX)(R9*1))
	DT1((DI), 160(SP)(CX*4))
	DT1((DI)(R10*1), 192(SP)(CX*4))
	DT1((R11), 224(SP)(CX*4))
	DT1((R11)(R10*1), 256(SP)(CX*4))
	ADDQ $18, AX
	ADDQ $4, DI
	ADDQ $4, R11
	INCQ CX
	JNZ  q40v4pairtailk
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

q40v4pairblocks:
	PREFETCHT0 PF(BX)
	PREFETCHT0 PF(BX)(R9*1)
	LOADQ4(2(BX), Y8, Y10)
	LOADQ4(2(BX)(R9*1), Y9, Y11)
	VMOVDQU (SI), Y12
	PAIR(Y12, Y8, Y10, 32(SP)(CX*4), Y0)
	PAIR(Y12, Y9, Y11, 160(SP)(CX*4), Y4)
	VMOVDQU (SI)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 64(SP)(CX*4), Y1)
	PAIR(Y12, Y9, Y11, 192(SP)(CX*4), Y5)
	VMOVDQU (R8), Y12
	PAIR(Y12, Y8, Y10, 96(SP)(CX*4), Y2)
	PAIR(Y12, Y9, Y11, 224(SP)(CX*4), Y6)
	VMOVDQU (R8)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 128(SP)(CX*4), Y3)
	PAIR(Y12, Y9, Y11, 256(SP)(CX*4), Y7)
	ADDQ $18, BX
	ADDQ $32, SI
	ADDQ $32, R8
	INCQ CX
	JNZ  q40v4pairblocks
	TESTQ R12, R12
	JNZ   q40v4pairgroup

	MOVQ 256(SP), AX
	MOVQ ldd+8(FP), CX
	SHLQ $2, CX
	LEAQ (AX)(CX*2), R12
	HSUM(Y0, X0, 0(AX))
	HSUM(Y1, X1, 0(AX)(CX*1))
	HSUM(Y2, X2, 0(R12))
	HSUM(Y3, X3, 0(R12)(CX*1))
	ADDQ 264(SP), AX
	ADDQ 264(SP), R12
	HSUM(Y4, X4, 0(AX))
	HSUM(Y5, X5, 0(AX)(CX*1))
	HSUM(Y6, X6, 0(R12))
	HSUM(Y7, X7, 0(R12)(CX*1))
	MOVQ 256(SP), AX
	ADDQ $4, AX
	MOVQ AX, 256(SP)
	DECQ R13
	JNZ  q40v4pair

	ADDQ R9, BX
	ADDQ 264(SP), AX
	MOVQ AX, 256(SP)

q40v4pairdone:
	MOVQ nrows+32(FP), R13
	ANDQ $1, R13

q40v4one:
	TESTQ R13, R13
	JZ    q40v4done
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	MOVQ qs+40(FP), SI
	LEAQ (SI)(DX*2), R8
	MOVQ d+48(FP), DI
	LEAQ (DI)(R10*2), R11
	MOVQ nb+56(FP), R12

q40v4onegroup:
	CMPQ R12, $8
	JB   q40v4onetail
	WD8Q4((BX), AX, CX)
	DT8((DI), 0(SP))
	DT8((DI)(R10*1), 32(SP))
	DT8((R11), 64(SP))
	DT8((R11)(R10*1), 96(SP))
	ADDQ $32, DI
	ADDQ $32, R11
	SUBQ $8, R12
	MOVQ $-8, CX
	JMP  q40v4oneblocks

q40v4onetail:
	MOVQ R12, CX
	NEGQ CX
	MOVQ BX, AX

q40v4onetailk:
	WD1((AX))
	DT1((DI), 32(SP)(CX*4))
	DT1((DI)(R10*1), 64(SP)(CX*4))
	DT1((R11), 96(SP)(CX*4))
	DT1((R11)(R10*1), 128(SP)(CX*4))
	ADDQ $18, AX
	ADDQ $4, DI
	ADDQ $4, R11
	INCQ CX
	JNZ  q40v4onetailk
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

q40v4oneblocks:
	PREFETCHT0 PF(BX)
	LOADQ4(2(BX), Y8, Y10)
	VMOVDQU (SI), Y12
	PAIR(Y12, Y8, Y10, 32(SP)(CX*4), Y0)
	VMOVDQU (SI)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 64(SP)(CX*4), Y1)
	VMOVDQU (R8), Y12
	PAIR(Y12, Y8, Y10, 96(SP)(CX*4), Y2)
	VMOVDQU (R8)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 128(SP)(CX*4), Y3)
	ADDQ $18, BX
	ADDQ $32, SI
	ADDQ $32, R8
	INCQ CX
	JNZ  q40v4oneblocks
	TESTQ R12, R12
	JNZ   q40v4onegroup

	MOVQ 256(SP), AX
	MOVQ ldd+8(FP), CX
	SHLQ $2, CX
	LEAQ (AX)(CX*2), R12
	HSUM(Y0, X0, 0(AX))
	HSUM(Y1, X1, 0(AX)(CX*1))
	HSUM(Y2, X2, 0(R12))
	HSUM(Y3, X3, 0(R12)(CX*1))
	MOVQ 256(SP), AX
	ADDQ $4, AX
	MOVQ AX, 256(SP)
	DECQ R13
	JMP  q40v4one

q40v4done:
	VZEROUPPER
	RET

// The prompt kernel for Q4_0 (eight or more vectors) decodes a chunk of rows once for all the
// vectors, into its frame: the quants minus 8 in aligned blocks of 32 bytes, as LOADQ4 gives
// them, two rows interleaved, and the fp16 scales as float32, eight blocks at a time. Then every
// group of four vectors runs over the packed chunk (from L1 or L2) two rows at a time. The integer
// lanes, the block scales wd*yd and the order of the FMAs and of hsum_float_8 are those of the
// kernels above, so the results are the same bits. The frame has room for 65536 bytes of packed
// rows (q4PackBytes in Go): per pair of rows, 64 bytes a block and 64 bytes of scales per group of
// eight blocks.

DATA lanemask<>+0(SB)/8, $-1
DATA lanemask<>+8(SB)/8, $-1
DATA lanemask<>+16(SB)/8, $-1
DATA lanemask<>+24(SB)/8, $-1
DATA lanemask<>+32(SB)/8, $0
DATA lanemask<>+40(SB)/8, $0
DATA lanemask<>+48(SB)/8, $0
DATA lanemask<>+56(SB)/8, $0
GLOBL lanemask<>(SB), RODATA|NOPTR, $64

// DT2 stores the block scales of one vector with both rows of a pair: the vector's eight float32
// scales at yd times each row's float32 scales in Y8 and Y9, to the frame slots at s0 and s1.
// DT2M loads only the lanes that the mask in Y12 selects, and reads nothing past them.
#define DT2(yd, s0, s1) \
	VMOVUPS yd, Y10; \
	VMULPS  Y10, Y8, Y11; \
	VMOVUPS Y11, s0(SP); \
	VMULPS  Y10, Y9, Y11; \
	VMOVUPS Y11, s1(SP)

#define DT2M(yd, s0, s1) \
	VMASKMOVPS yd, Y12, Y10; \
	VMULPS     Y10, Y8, Y11; \
	VMOVUPS    Y11, s0(SP); \
	VMULPS     Y10, Y9, Y11; \
	VMOVUPS    Y11, s1(SP)

// HSUM8 is HSUM of the eight accumulators Y0-Y7 (two rows by four vectors) at once, with the same
// additions in the same order: high plus low half, then lanes 0,1 plus lanes 2,3, then lane 0 plus
// lane 1. Y0 ends as the first row's sums for vectors 0-3, then the second row's.
#define HSUM8 \
	VPERM2F128 $0x20, Y4, Y0, Y8; \
	VPERM2F128 $0x31, Y4, Y0, Y9; \
	VADDPS     Y8, Y9, Y0; \
	VPERM2F128 $0x20, Y5, Y1, Y8; \
	VPERM2F128 $0x31, Y5, Y1, Y9; \
	VADDPS     Y8, Y9, Y1; \
	VPERM2F128 $0x20, Y6, Y2, Y8; \
	VPERM2F128 $0x31, Y6, Y2, Y9; \
	VADDPS     Y8, Y9, Y2; \
	VPERM2F128 $0x20, Y7, Y3, Y8; \
	VPERM2F128 $0x31, Y7, Y3, Y9; \
	VADDPS     Y8, Y9, Y3; \
	VSHUFPS    $0x44, Y1, Y0, Y8; \
	VSHUFPS    $0xEE, Y1, Y0, Y9; \
	VADDPS     Y9, Y8, Y0; \
	VSHUFPS    $0x44, Y3, Y2, Y8; \
	VSHUFPS    $0xEE, Y3, Y2, Y9; \
	VADDPS     Y9, Y8, Y2; \
	VSHUFPS    $0x88, Y2, Y0, Y8; \
	VSHUFPS    $0xDD, Y2, Y0, Y9; \
	VADDPS     Y9, Y8, Y0

// UNPACKQ4 decodes a Q4_0 block's 16 bytes at src into its 32 quants minus 8 in x, as LOADQ4 does
// (Y13 holds the shifts, Y14 the nibble mask, Y15 bytes of 8).
#define UNPACKQ4(src, x) \
	VBROADCASTI128 src, x; \
	VPSRLVD        Y13, x, x; \
	VPAND          Y14, x, x; \
	VPSUBB         Y15, x, x

// func q0Vec4PackedAVX2(dst *float32, ldd int, packed *byte, wd *float32, npairs, odd int, qs *int8, d *float32, nb int)
//
// Four consecutive vectors against npairs pairs of packed rows, eight accumulators (each row's
// loaded quants and magnitudes serve four vectors, each vector's quants two rows). Pair i is rows
// 2i and 2i+1: at packed, 64 bytes a block (the two rows' quants); at wd, 64 bytes a group of
// eight blocks (the two rows' scales, zero past the last block). In the last pair the second row is
// a copy of the first when odd is 1, and its results are not stored. The results of rows 2i and
// 2i+1 go to dst[v*ldd+2i] and dst[v*ldd+2i+1]. The frame holds the eight (row, vector) block
// scales of the current group, which the block loops read through AX so that CX, counting up to
// 0, indexes them in full and partial groups alike, and the dst cursor.
TEXT ·q0Vec4PackedAVX2(SB), NOSPLIT, $264-72
	VMOVDQU ones16<>(SB), Y15
	MOVQ dst+0(FP), AX
	MOVQ AX, 256(SP)
	MOVQ packed+16(FP), BX
	MOVQ wd+24(FP), R9
	MOVQ nb+64(FP), R10
	MOVQ R10, DX
	SHLQ $5, DX
	SHLQ $2, R10
	MOVQ npairs+32(FP), R13

p4pair:
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	MOVQ qs+48(FP), SI
	LEAQ (SI)(DX*2), R8
	MOVQ d+56(FP), DI
	LEAQ (DI)(R10*2), R11
	MOVQ nb+64(FP), R12

p4group:
	VMOVUPS (R9), Y8
	VMOVUPS 32(R9), Y9
	ADDQ    $64, R9
	CMPQ    R12, $8
	JB      p4tail
	DT2((DI), 0, 128)
	DT2((DI)(R10*1), 32, 160)
	DT2((R11), 64, 192)
	DT2((R11)(R10*1), 96, 224)
	ADDQ $32, DI
	ADDQ $32, R11
	SUBQ $8, R12
	MOVQ $-8, CX
	LEAQ 32(SP), AX

	// A full group, two blocks an iteration.
p4blocks2:
	VMOVDQU 0(BX), Y8
	VPABSB  Y8, Y10
	VMOVDQU 32(BX), Y9
	VPABSB  Y9, Y11
	VMOVDQU (SI), Y12
	PAIR(Y12, Y8, Y10, 0(AX)(CX*4), Y0)
	PAIR(Y12, Y9, Y11, 128(AX)(CX*4), Y4)
	VMOVDQU (SI)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 32(AX)(CX*4), Y1)
	PAIR(Y12, Y9, Y11, 160(AX)(CX*4), Y5)
	VMOVDQU (R8), Y12
	PAIR(Y12, Y8, Y10, 64(AX)(CX*4), Y2)
	PAIR(Y12, Y9, Y11, 192(AX)(CX*4), Y6)
	VMOVDQU (R8)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 96(AX)(CX*4), Y3)
	PAIR(Y12, Y9, Y11, 224(AX)(CX*4), Y7)
	VMOVDQU 64(BX), Y8
	VPABSB  Y8, Y10
	VMOVDQU 96(BX), Y9
	VPABSB  Y9, Y11
	VMOVDQU 32(SI), Y12
	PAIR(Y12, Y8, Y10, 4(AX)(CX*4), Y0)
	PAIR(Y12, Y9, Y11, 132(AX)(CX*4), Y4)
	VMOVDQU 32(SI)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 36(AX)(CX*4), Y1)
	PAIR(Y12, Y9, Y11, 164(AX)(CX*4), Y5)
	VMOVDQU 32(R8), Y12
	PAIR(Y12, Y8, Y10, 68(AX)(CX*4), Y2)
	PAIR(Y12, Y9, Y11, 196(AX)(CX*4), Y6)
	VMOVDQU 32(R8)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 100(AX)(CX*4), Y3)
	PAIR(Y12, Y9, Y11, 228(AX)(CX*4), Y7)
	ADDQ $128, BX
	ADDQ $64, SI
	ADDQ $64, R8
	ADDQ $2, CX
	JNZ  p4blocks2
	JMP  p4next

p4tail:
	// The last g = R12 < 8 blocks: the vectors' scales are loaded under a mask of g lanes and the
	// products stored from lane 0; AX = SP+4g makes CX run from -g.
	LEAQ    lanemask<>+32(SB), AX
	MOVQ    R12, CX
	SHLQ    $2, CX
	SUBQ    CX, AX
	VMOVDQU (AX), Y12
	DT2M((DI), 0, 128)
	DT2M((DI)(R10*1), 32, 160)
	DT2M((R11), 64, 192)
	DT2M((R11)(R10*1), 96, 224)
	LEAQ (SP)(CX*1), AX
	MOVQ R12, CX
	NEGQ CX
	XORQ R12, R12

p4blocks:
	VMOVDQU 0(BX), Y8
	VPABSB  Y8, Y10
	VMOVDQU 32(BX), Y9
	VPABSB  Y9, Y11
	VMOVDQU (SI), Y12
	PAIR(Y12, Y8, Y10, 0(AX)(CX*4), Y0)
	PAIR(Y12, Y9, Y11, 128(AX)(CX*4), Y4)
	VMOVDQU (SI)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 32(AX)(CX*4), Y1)
	PAIR(Y12, Y9, Y11, 160(AX)(CX*4), Y5)
	VMOVDQU (R8), Y12
	PAIR(Y12, Y8, Y10, 64(AX)(CX*4), Y2)
	PAIR(Y12, Y9, Y11, 192(AX)(CX*4), Y6)
	VMOVDQU (R8)(DX*1), Y12
	PAIR(Y12, Y8, Y10, 96(AX)(CX*4), Y3)
	PAIR(Y12, Y9, Y11, 224(AX)(CX*4), Y7)
	ADDQ $64, BX
	ADDQ $32, SI
	ADDQ $32, R8
	INCQ CX
	JNZ  p4blocks

p4next:
	TESTQ R12, R12
	JNZ   p4group

	HSUM8
	MOVQ 256(SP), AX
	MOVQ ldd+8(FP), CX
	SHLQ $2, CX
	LEAQ (AX)(CX*2), R12
	CMPQ R13, $1
	JNE  p4both
	CMPQ odd+40(FP), $0
	JNE  p4one

p4both:
	VEXTRACTF128 $1, Y0, X1
	VUNPCKLPS    X1, X0, X2
	VUNPCKHPS    X1, X0, X3
	VMOVLPS      X2, (AX)
	VMOVHPS      X2, (AX)(CX*1)
	VMOVLPS      X3, (R12)
	VMOVHPS      X3, (R12)(CX*1)
	ADDQ $8, AX
	MOVQ AX, 256(SP)
	DECQ R13
	JNZ  p4pair
	VZEROUPPER
	RET

p4one:
	VMOVSS     X0, (AX)
	VEXTRACTPS $1, X0, (AX)(CX*1)
	VEXTRACTPS $2, X0, (R12)
	VEXTRACTPS $3, X0, (R12)(CX*1)
	VZEROUPPER
	RET

// func q4_0MatAVX2(dst *float32, ldd int, rows *byte, rowBytes, nrows int, qs *int8, d *float32, nb, groups int)
//
// Packs the nrows rows (no more than 65536 bytes of them packed) into the frame, then runs
// q0Vec4PackedAVX2 for each of the groups of four consecutive vectors at qs and d, writing vector
// v's results to dst[v*ldd:]. The frame holds q0Vec4PackedAVX2's arguments, the group count and
// the packed rows, from the first 64-byte boundary past 128(SP): npairs*nb blocks of 64 bytes, then
// the scales. It has no pointers the collector must see: its pointers are copies of the arguments'
// or point into the frame.
TEXT ·q4_0MatAVX2(SB), $65728-72
	NO_LOCAL_POINTERS
	MOVQ rows+16(FP), BX
	MOVQ rowBytes+24(FP), R9
	LEAQ 191(SP), DI
	ANDQ $-64, DI
	MOVQ DI, 16(SP)
	MOVQ nrows+32(FP), R13
	MOVQ R13, AX
	ANDQ $1, AX
	MOVQ AX, 40(SP)
	INCQ R13
	SHRQ $1, R13
	MOVQ R13, 32(SP)
	MOVQ nb+56(FP), AX
	IMULQ R13, AX
	SHLQ $6, AX
	LEAQ (DI)(AX*1), SI
	MOVQ SI, 24(SP)
	VMOVDQU shifts<>(SB), Y13
	VMOVDQU nibbles<>(SB), Y14
	VMOVDQU eights<>(SB), Y15

	// DI and SI are the packing cursors (quants, scales); BX and R8 the pair's rows (R8 = BX in an
	// odd last pair).
q4mpair:
	LEAQ (BX)(R9*1), R8
	CMPQ R13, $1
	JNE  q4mrows
	CMPQ 40(SP), $0
	JE   q4mrows
	MOVQ BX, R8

q4mrows:
	MOVQ nb+56(FP), R12

q4mgroup:
	CMPQ R12, $8
	JB   q4mtail
	WD8Q4((BX), AX, DX)
	VMOVUPS Y12, (SI)
	WD8Q4((R8), AX, DX)
	VMOVUPS Y12, 32(SI)
	ADDQ $64, SI
	MOVQ $8, CX

q4mgroupk:
	UNPACKQ4(2(BX), Y0)
	VMOVDQU Y0, (DI)
	UNPACKQ4(2(R8), Y1)
	VMOVDQU Y1, 32(DI)
	ADDQ $18, BX
	ADDQ $18, R8
	ADDQ $64, DI
	DECQ CX
	JNZ  q4mgroupk
	SUBQ $8, R12
	JMP  q4mgroup

q4mtail:
	TESTQ R12, R12
	JZ    q4mpairdone
	VXORPS  Y2, Y2, Y2
	VMOVUPS Y2, (SI)
	VMOVUPS Y2, 32(SI)
	XORQ CX, CX

q4mtailk:
	WD1((BX))
	VMOVSS X12, (SI)(CX*4)
	WD1((R8))
	VMOVSS X12, 32(SI)(CX*4)
	UNPACKQ4(2(BX), Y0)
	VMOVDQU Y0, (DI)
	UNPACKQ4(2(R8), Y1)
	VMOVDQU Y1, 32(DI)
	ADDQ $18, BX
	ADDQ $18, R8
	ADDQ $64, DI
	INCQ CX
	CMPQ CX, R12
	JB   q4mtailk
	ADDQ $64, SI

q4mpairdone:
	MOVQ R8, BX
	DECQ R13
	JNZ  q4mpair

	MOVQ dst+0(FP), AX
	MOVQ AX, 0(SP)
	MOVQ ldd+8(FP), AX
	MOVQ AX, 8(SP)
	MOVQ qs+40(FP), AX
	MOVQ AX, 48(SP)
	MOVQ d+48(FP), AX
	MOVQ AX, 56(SP)
	MOVQ nb+56(FP), AX
	MOVQ AX, 64(SP)
	MOVQ groups+64(FP), AX
	MOVQ AX, 72(SP)

q4mvecs:
	CALL ·q0Vec4PackedAVX2(SB)
	MOVQ ldd+8(FP), AX
	SHLQ $4, AX
	ADDQ AX, 0(SP)
	MOVQ nb+56(FP), AX
	SHLQ $7, AX
	ADDQ AX, 48(SP)
	MOVQ nb+56(FP), AX
	SHLQ $4, AX
	ADDQ AX, 56(SP)
	DECQ 72(SP)
	JNZ  q4mvecs
	VZEROUPPER
	RET
