package quant

import (
	"encoding/binary"
	"math"
	"testing"
)

func checkFloats(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] && !(math.IsNaN(float64(got[i])) && math.IsNaN(float64(want[i]))) {
			t.Fatalf("%s: element %d = %g, want %g", what, i, got[i], want[i])
		}
	}
}

func dequant(t *testing.T, typ Type, n int, src []byte) []float32 {
	t.Helper()
	dst := make([]float32, n)
	if err := Dequantize(typ, dst, src); err != nil {
		t.Fatalf("Dequantize(%s, %d): %v", typ, n, err)
	}
	return dst
}

func TestDequantizeFloats(t *testing.T) {
	f32 := []byte{0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x80, 0x7f}
	checkFloats(t, "F32", dequant(t, F32, 3, f32), []float32{1, -2, float32(math.Inf(1))})

	f16 := []byte{0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00, 0xff, 0x7b}
	checkFloats(t, "F16", dequant(t, F16, 4, f16), []float32{1, -2, 0x1p-24, 65504})

	bf16 := []byte{0x80, 0x3f, 0x00, 0xc0, 0x49, 0x40, 0x80, 0xff}
	checkFloats(t, "BF16", dequant(t, BF16, 4, bf16), []float32{1, -2, 3.140625, float32(math.Inf(-1))})
}

func TestDequantizeQ8_0(t *testing.T) {
	// d = 0.25 (fp16 0x3400), q[j] = j-16 for j < 31 and q[31] = -128.
	blk := []byte{0x00, 0x34}
	want := make([]float32, 32)
	for j := range 32 {
		q := int8(j - 16)
		if j == 31 {
			q = -128
		}
		blk = append(blk, byte(q))
		want[j] = float32(q) / 4
	}
	checkFloats(t, "Q8_0", dequant(t, Q8_0, 32, blk), want)
}

func TestDequantizeQ4_0(t *testing.T) {
	// d = 0.5 (fp16 0x3800); qs[j] = j | (15-j)<<4, so element j is (j-8)/2 and element
	// j+16 is (15-j-8)/2 = (7-j)/2.
	blk := []byte{0x00, 0x38,
		0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f}
	want := []float32{
		-4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5,
		3.5, 3, 2.5, 2, 1.5, 1, 0.5, 0, -0.5, -1, -1.5, -2, -2.5, -3, -3.5, -4,
	}
	got := dequant(t, Q4_0, 32, blk)
	checkFloats(t, "Q4_0", got, want)

	// Two blocks: the second with d = -1 (fp16 0xbc00) and every nibble 0 (so every value is 8).
	two := append(append([]byte{}, blk...), 0x00, 0xbc)
	two = append(two, make([]byte, 16)...)
	want2 := append(append([]float32{}, want...), make([]float32, 32)...)
	for i := 32; i < 64; i++ {
		want2[i] = 8
	}
	checkFloats(t, "Q4_0 two blocks", dequant(t, Q4_0, 64, two), want2)
}

// q4KScales packs scales {1, 2, 3, 4, 17, 33, 50, 47} and mins {0, 1, 5, 10, 36, 20, 7, 63} by
// hand. Bytes 0-3: scale j in the low six bits, the high two bits of scale j+4 on top; bytes 4-7 the
// same for the mins; bytes 8-11: low four bits of scale j+4, low four bits of min j+4 on top. The
// high bits of scales and mins 4-7 differ (1,2,3,2 against 2,1,0,3) so that mixing them up shows.
//
//	scales 17 = 01 0001, 33 = 10 0001, 50 = 11 0010, 47 = 10 1111
//	mins   36 = 10 0100, 20 = 01 0100,  7 = 00 0111, 63 = 11 1111
var (
	q4KScales = [12]byte{
		1 | 1<<6, 2 | 2<<6, 3 | 3<<6, 4 | 2<<6, // 0x41 0x82 0xc3 0x84
		0 | 2<<6, 1 | 1<<6, 5 | 0<<6, 10 | 3<<6, // 0x80 0x41 0x05 0xca
		1 | 4<<4, 1 | 4<<4, 2 | 7<<4, 15 | 15<<4, // 0x41 0x41 0x72 0xff
	}
	q4KSc   = [8]float32{1, 2, 3, 4, 17, 33, 50, 47}
	q4KMins = [8]float32{0, 1, 5, 10, 36, 20, 7, 63}
)

func TestScaleMinK4(t *testing.T) {
	if q4KScales != [12]byte{0x41, 0x82, 0xc3, 0x84, 0x80, 0x41, 0x05, 0xca, 0x41, 0x41, 0x72, 0xff} {
		t.Fatalf("hand packing changed: % x", q4KScales)
	}
	for j := range 8 {
		sc, m := scaleMinK4(j, &q4KScales)
		if float32(sc) != q4KSc[j] || float32(m) != q4KMins[j] {
			t.Errorf("sub-block %d: scale %d min %d, want %g %g", j, sc, m, q4KSc[j], q4KMins[j])
		}
	}
}

// q4KNibble returns the quant of element i (0..255) in a Q4_K block from its position: elements
// come in groups of 64 sharing 32 bytes, low nibbles first.
func q4KNibble(qs []byte, i int) (q uint8, sub int) {
	chunk, r := i/64, i%64
	b := qs[32*chunk+r%32]
	if r >= 32 {
		return b >> 4, 2*chunk + 1
	}
	return b & 0xf, 2 * chunk
}

func TestDequantizeQ4K(t *testing.T) {
	// d = 1 (0x3c00), dmin = 0.5 (0x3800), the hand-packed scales, and qs[k] = k%16 | (15-k%16)<<4.
	blk := []byte{0x00, 0x3c, 0x00, 0x38}
	blk = append(blk, q4KScales[:]...)
	for k := range 128 {
		blk = append(blk, byte(k%16)|byte(15-k%16)<<4)
	}
	want := make([]float32, 256)
	for i := range want {
		q, sub := q4KNibble(blk[16:], i)
		want[i] = q4KSc[sub]*float32(q) - 0.5*q4KMins[sub]
	}
	// Spot values worked out by hand: element 0 is sub-block 0, q=0: 1*0 - 0.5*0 = 0; element 33
	// is sub-block 1, high nibble of qs[1] = 14: 2*14 - 0.5*1 = 27.5; element 200 is sub-block 6,
	// low nibble of qs[96+8] = 8: 50*8 - 0.5*7 = 396.5; element 255 is sub-block 7, high nibble
	// of qs[127] = 0: 0 - 0.5*63 = -31.5.
	for i, v := range map[int]float32{0: 0, 33: 27.5, 200: 396.5, 255: -31.5} {
		if want[i] != v {
			t.Fatalf("position formula gives element %d = %g, hand value %g", i, want[i], v)
		}
	}
	checkFloats(t, "Q4_K", dequant(t, Q4_K, 256, blk), want)
}

// q6KQuant returns the 6-bit quant (0..63) of element i in a Q6_K block and its scale index, from
// its position: halves of 128, each four groups of 32; group g takes nibble g/2 of
// ql[64h + 32(g%2) + l] and bits 2g, 2g+1 of qh[32h + l].
func q6KQuant(blk []byte, i int) (q uint8, scale int) {
	h, r := i/128, i%128
	g, l := r/32, r%32
	lo := blk[64*h+32*(g%2)+l] >> (4 * (g / 2)) & 0xf
	hi := blk[q6KQh+32*h+l] >> (2 * g) & 3
	return lo | hi<<4, 8*h + 2*g + l/16
}

// setQ6KQuant is the inverse of q6KQuant, used to build blocks from chosen quants.
func setQ6KQuant(blk []byte, i int, q uint8) {
	h, r := i/128, i%128
	g, l := r/32, r%32
	lo := &blk[64*h+32*(g%2)+l]
	*lo = *lo&^(0xf<<(4*(g/2))) | (q&0xf)<<(4*(g/2))
	hi := &blk[q6KQh+32*h+l]
	*hi = *hi&^(3<<(2*g)) | (q>>4)<<(2*g)
}

var q6KSc = [16]int8{1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 127, -128}

func q6KHandBlock() []byte {
	blk := make([]byte, q6KBytes)
	for i := range 256 {
		setQ6KQuant(blk, i, uint8(i*7%64))
	}
	for j, s := range q6KSc {
		blk[q6KScales+j] = byte(s)
	}
	binary.LittleEndian.PutUint16(blk[q6KD:], 0x3400) // d = 0.25
	return blk
}

func TestDequantizeQ6K(t *testing.T) {
	blk := q6KHandBlock()
	want := make([]float32, 256)
	for i := range want {
		q, s := q6KQuant(blk, i)
		if q != uint8(i*7%64) {
			t.Fatalf("element %d: packed %d, read back %d", i, i*7%64, q)
		}
		want[i] = 0.25 * float32(q6KSc[s]) * float32(int(q)-32)
	}
	// By hand: element 0 has q=0 and scale 1: 0.25*1*(0-32) = -8. Element 20 has q=140%64=12, scale
	// index 1 (-1): 0.25*-1*(12-32) = 5. Element 250: half 1, group 3, l=26, scale index
	// 8+6+1 = 15 (-128), q = 1750%64 = 22: 0.25*-128*(22-32) = 320. Element 225: scale 8+6+0 = 14
	// (127), q = 1575%64 = 39: 0.25*127*7 = 222.25.
	for i, v := range map[int]float32{0: -8, 20: 5, 250: 320, 225: 222.25} {
		if want[i] != v {
			t.Fatalf("position formula gives element %d = %g, hand value %g", i, want[i], v)
		}
	}
	checkFloats(t, "Q6_K", dequant(t, Q6_K, 256, blk), want)
}

func TestDequantizeErrors(t *testing.T) {
	cases := []struct {
		name string
		t    Type
		n    int
		src  int
	}{
		{"short source", Q8_0, 32, 33},
		{"long source", Q8_0, 32, 35},
		{"partial block", Q4_K, 100, 144},
		{"unsupported", Type(13), 256, 176},
		{"activation type", Q8_K, 256, 292},
		{"f32 odd bytes", F32, 2, 7},
	}
	for _, c := range cases {
		if err := Dequantize(c.t, make([]float32, c.n), make([]byte, c.src)); err == nil {
			t.Errorf("%s: Dequantize(%s, %d elements, %d bytes) succeeded", c.name, c.t, c.n, c.src)
		}
	}
	if err := Dequantize(Q4_K, nil, nil); err != nil {
		t.Errorf("empty Dequantize: %v", err)
	}
}

func TestDequantizeRow(t *testing.T) {
	blk := q6KHandBlock()
	data := make([]byte, 3*q6KBytes)
	copy(data[q6KBytes:], blk) // row 1 of a 3x256 matrix
	w, err := NewMatrix(Q6_K, 3, 256, data)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, 300)
	for i := range got {
		got[i] = 42
	}
	DequantizeRow(w, 1, got)
	checkFloats(t, "row 1", got[:256], dequant(t, Q6_K, 256, blk))
	if got[256] != 42 {
		t.Errorf("DequantizeRow wrote past Cols")
	}
	for _, r := range []int{-1, 3} {
		if !panics(func() { DequantizeRow(w, r, got) }) {
			t.Errorf("DequantizeRow(row %d) did not panic", r)
		}
	}
	if !panics(func() { DequantizeRow(w, 0, got[:255]) }) {
		t.Errorf("DequantizeRow into a short slice did not panic")
	}
}

func panics(f func()) (did bool) {
	defer func() { did = recover() != nil }()
	f()
	return false
}
