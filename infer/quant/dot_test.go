package quant

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

var weightTypes = []Type{F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K}

// goKernels are the plain Go kernels: the oracle for whatever dotKernels holds.
var goKernels = map[Type]dotFunc{
	F32: dotF32Go, F16: dotF16Go, BF16: dotBF16Go,
	Q8_0: dotQ8_0Go, Q4_0: dotQ4_0Go, Q4_K: dotQ4KGo, Q6_K: dotQ6KGo,
}

// randomRows returns rows of random bytes with every scale field overwritten by a small fp16, so
// every bit pattern of quants and sub-scales (high scale bits, negative Q6_K scales) is exercised
// while the values stay finite. Float types get Gaussian values.
func randomRows(r *rand.Rand, typ Type, rows, cols int) []byte {
	rb, _ := RowBytes(typ, cols)
	data := make([]byte, rows*rb)
	if typ.BlockSize() == 1 {
		if err := Quantize(typ, data, gaussian(r, rows*cols, 1)); err != nil {
			panic(err)
		}
		return data
	}
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	scale := func(b []byte) { binary.LittleEndian.PutUint16(b, F32ToF16(float32(r.Float64()*0.02-0.01))) }
	for b := 0; b < len(data); b += typ.BlockBytes() {
		blk := data[b : b+typ.BlockBytes()]
		switch typ {
		case Q8_0, Q4_0:
			scale(blk)
		case Q4_K:
			scale(blk)
			scale(blk[2:])
		case Q6_K:
			scale(blk[q6KD:])
		}
	}
	return data
}

// activationValues returns the values the prepared activation stands for.
func activationValues(a *Activation) []float64 {
	v := make([]float64, a.n)
	switch a.format {
	case F32, F16, BF16:
		for i, x := range a.f32 {
			v[i] = float64(x)
		}
	case Q8_0, Q8_K:
		bs := a.format.BlockSize()
		for i, q := range a.qs {
			v[i] = float64(q) * float64(a.d[i/bs])
		}
	}
	return v
}

// magnitudes returns per element the largest magnitude any partial term of the kernel can have:
// |w| except for Q4_K, whose kernel sums d*sc*q and dmin*m separately.
func magnitudes(typ Type, row []byte, w []float32) []float64 {
	m := make([]float64, len(w))
	for i, v := range w {
		m[i] = math.Abs(float64(v))
	}
	if typ == Q4_K {
		for b := 0; b < len(row)/q4KBytes; b++ {
			blk := row[b*q4KBytes:]
			d, dmin := math.Abs(float64(getF16(blk))), math.Abs(float64(getF16(blk[2:])))
			for j := range 8 {
				sc, mn := scaleMinK4(j, (*[12]byte)(blk[4:16]))
				for i := range 32 {
					m[b*256+32*j+i] = d*float64(sc)*15 + dmin*float64(mn)
				}
			}
		}
	}
	return m
}

// TestDotProducts checks MatVecRows and DotRow for every type two ways:
//   - against the float64 dot of the dequantised row with the values the prepared activation holds,
//     within 1e-5 of the sum of term magnitudes: only float32 rounding separates them, so this pins
//     the integer kernels bit for bit in layout;
//   - against the float64 dot with the original x, within the activation's quantisation error: each
//     element is off by at most half a step, amax/254 of its block (Q8_0 adds the fp16 rounding of
//     its scale, < 127.5*2^-11 steps), so the dot is off by at most sum |w_i| * err_i.
func TestDotProducts(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const rows, cols = 9, 512
	for _, typ := range weightTypes {
		for _, source := range []string{"random bytes", "quantised"} {
			var data []byte
			if source == "random bytes" {
				data = randomRows(r, typ, rows, cols)
			} else {
				data = quantize(t, typ, gaussian(r, rows*cols, 0.05))
			}
			w, err := NewMatrix(typ, rows, cols, data)
			if err != nil {
				t.Fatal(err)
			}
			x := gaussian(r, cols, 1)
			x[3] = 4 // an outlier sets one block's step
			var a Activation
			if err := a.Prepare(typ, x); err != nil {
				t.Fatal(err)
			}
			xq := activationValues(&a)
			format, _ := vecDotType(typ)
			stepErr := make([]float64, cols)
			if format != F32 {
				bs := format.BlockSize()
				for b := 0; b < cols; b += bs {
					var amax float64
					for _, v := range x[b : b+bs] {
						amax = math.Max(amax, math.Abs(float64(v)))
					}
					for i := b; i < b+bs; i++ {
						stepErr[i] = amax / 254 * 1.001
						if format == Q8_0 {
							stepErr[i] += amax / 127 * 127.5 / 2048
						}
					}
				}
			}
			got := make([]float32, rows+1)
			got[rows] = 42
			MatVecRows(got, w, &a, 0, 5)
			MatVecRows(got, w, &a, 5, rows)
			if got[rows] != 42 {
				t.Fatalf("%s: MatVecRows wrote past its rows", typ)
			}
			rb, _ := RowBytes(typ, cols)
			for row := range rows {
				rowBytes := data[row*rb : (row+1)*rb]
				wf := dequant(t, typ, cols, rowBytes)
				mag := magnitudes(typ, rowBytes, wf)
				var exact, ideal, scaleSum, bound float64
				for i := range cols {
					exact += float64(wf[i]) * xq[i]
					ideal += float64(wf[i]) * float64(x[i])
					scaleSum += mag[i] * math.Abs(xq[i])
					bound += math.Abs(float64(wf[i])) * stepErr[i]
				}
				tol := 1e-5*scaleSum + 1e-30
				if d := math.Abs(float64(got[row]) - exact); d > tol {
					t.Errorf("%s %s row %d: MatVecRows %g, dequantised dot %g: off by %g > %g",
						typ, source, row, got[row], exact, d, tol)
				}
				if d := math.Abs(float64(got[row]) - ideal); d > bound+tol {
					t.Errorf("%s %s row %d: MatVecRows %g, float dot %g: off by %g > %g",
						typ, source, row, got[row], ideal, d, bound+tol)
				}
				if one := DotRow(typ, rowBytes, &a); one != got[row] {
					t.Errorf("%s %s row %d: DotRow %g, MatVecRows %g", typ, source, row, one, got[row])
				}
				if oracle := goKernels[typ](rowBytes, a.vector(0)); math.Abs(float64(oracle-got[row])) > tol {
					t.Errorf("%s %s row %d: installed kernel %g, Go oracle %g", typ, source, row, got[row], oracle)
				}
			}
		}
	}
}

// TestDotByHand uses activations that quantise exactly, so the expected dot is an exact integer sum.
func TestDotByHand(t *testing.T) {
	// Q8_0 weights d=0.25, q = j-16 (j < 31), q[31] = -128, against x[j] = j-100 for j < 31 and
	// x[31] = 127: amax 127 makes the activation scale exactly 1 and its quants exactly x.
	w := []byte{0x00, 0x34}
	x := make([]float32, 32)
	var want float64
	for j := range 32 {
		q := int8(j - 16)
		x[j] = float32(j - 100)
		if j == 31 {
			q, x[j] = -128, 127
		}
		w = append(w, byte(q))
		want += float64(q) * 0.25 * float64(x[j])
	}
	// Sum: sum_{j<31} (j-16)(j-100) = sum j² - 116 sum j + 31*1600 = 9455 - 53940 + 49600 = 5115,
	// so the dot is 0.25 * (5115 + (-128)(127)) = 0.25 * (5115 - 16256) = -2785.25.
	if want != -2785.25 {
		t.Fatalf("hand sum %g", want)
	}
	var a Activation
	if err := a.Prepare(Q8_0, x); err != nil {
		t.Fatal(err)
	}
	if got := DotRow(Q8_0, w, &a); got != -2785.25 {
		t.Errorf("Q8_0 dot = %g, want -2785.25", got)
	}

	// The same x against the hand-made Q4_0 block (d=0.5): weights (j-8)/2 and (7-j)/2 for j<16.
	q4 := []byte{0x00, 0x38,
		0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f}
	want = 0
	for j := range 16 {
		want += float64(j-8) / 2 * float64(x[j])
		want += float64(7-j) / 2 * float64(x[j+16])
	}
	if got := DotRow(Q4_0, q4, &a); float64(got) != want {
		t.Errorf("Q4_0 dot = %g, want %g", got, want)
	}

	// K-quants: x[i] = i%255 - 127. The first element of largest magnitude is x[0] = -127, so the
	// Q8_K scale is iscale = -127/-127 = 1, d = 1, and the quants are exactly x.
	xk := make([]float32, 256)
	for i := range xk {
		xk[i] = float32(i%255 - 127)
	}
	var ak Activation
	if err := ak.Prepare(Q4_K, xk); err != nil {
		t.Fatal(err)
	}
	if ak.d[0] != 1 || ak.qs[200] != 73 {
		t.Fatalf("Q8_K activation d=%g q[200]=%d, want 1 and 73", ak.d[0], ak.qs[200])
	}
	for _, c := range []struct {
		t   Type
		blk []byte
	}{{Q4_K, q4KHandBlockBytes()}, {Q6_K, q6KHandBlock()}} {
		wf := dequant(t, c.t, 256, c.blk)
		want = 0
		for i := range wf {
			want += float64(wf[i]) * float64(xk[i])
		}
		if got := DotRow(c.t, c.blk, &ak); float64(got) != want {
			t.Errorf("%s dot = %g, want %g", c.t, got, want)
		}
	}
}

func q4KHandBlockBytes() []byte {
	blk := []byte{0x00, 0x3c, 0x00, 0x38}
	blk = append(blk, q4KScales[:]...)
	for k := range 128 {
		blk = append(blk, byte(k%16)|byte(15-k%16)<<4)
	}
	return blk
}

func TestActivationQ8K(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	x := gaussian(r, 512, 3)
	x[300] = -20 // the second block's extreme is negative
	var a Activation
	if err := a.Prepare(Q6_K, x); err != nil {
		t.Fatal(err)
	}
	if a.format != Q8_K || len(a.qs) != 512 || len(a.d) != 2 || len(a.bsums) != 32 {
		t.Fatalf("format %s, %d quants, %d scales, %d sums", a.format, len(a.qs), len(a.d), len(a.bsums))
	}
	if a.d[1] != 20.0/127 || a.qs[300] != -127 {
		t.Errorf("block 1: d = %g, q[300] = %d; want 20/127 and -127", a.d[1], a.qs[300])
	}
	for g := range 32 {
		var s int
		for _, q := range a.qs[16*g : 16*g+16] {
			s += int(q)
		}
		if int(a.bsums[g]) != s {
			t.Errorf("bsums[%d] = %d, want %d", g, a.bsums[g], s)
		}
	}
	// d = -max/127 where max is the block's first element of largest magnitude, so quants of the
	// extreme are -127.
	for b := range 2 {
		var mx float32
		for _, v := range x[256*b : 256*b+256] {
			if abs32(v) > abs32(mx) {
				mx = v
			}
		}
		if a.d[b] != 1/(-127/mx) {
			t.Errorf("block %d: d = %g, want %g", b, a.d[b], 1/(-127/mx))
		}
	}
	for i, v := range x {
		d := float64(a.d[i/256])
		if e := math.Abs(float64(a.qs[i])*d - float64(v)); e > math.Abs(d)/2*1.0001 {
			t.Fatalf("element %d: %g quantised to %d*%g", i, v, a.qs[i], d)
		}
	}
	// An all-zero block gets d = 0 and zero sums, even when the buffers held something before.
	clear(x[:256])
	if err := a.Prepare(Q4_K, x); err != nil {
		t.Fatal(err)
	}
	if a.d[0] != 0 || a.bsums[3] != 0 || a.qs[10] != 0 {
		t.Errorf("zero block: d %g, bsums[3] %d, q[10] %d", a.d[0], a.bsums[3], a.qs[10])
	}
}

func TestActivationQ8_0(t *testing.T) {
	x := make([]float32, 64)
	for i := range x {
		x[i] = float32(i) * 0.1
	}
	var a Activation
	if err := a.Prepare(Q4_0, x); err != nil {
		t.Fatal(err)
	}
	// Block 0: amax 3.1, d = 3.1/127 stored through fp16; q = round(x*127/3.1).
	if want := F16ToF32(F32ToF16(3.1 / 127)); a.d[0] != want {
		t.Errorf("d[0] = %g, want fp16-rounded %g", a.d[0], want)
	}
	if a.qs[31] != 127 || a.qs[10] != 41 || a.qs[0] != 0 {
		t.Errorf("quants %d %d %d, want 127 41 0", a.qs[31], a.qs[10], a.qs[0])
	}
}

func TestPrepareErrors(t *testing.T) {
	var a Activation
	if err := a.Prepare(Q4_K, make([]float32, 256)); err != nil {
		t.Fatal(err)
	}
	w, err := NewMatrix(Q4_K, 1, 256, make([]byte, 144))
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float32, 1)
	for _, c := range []struct {
		t Type
		n int
	}{{Q4_K, 300}, {Q6_K, 128}, {Q8_0, 48}, {Q4_0, 1}, {Type(13), 256}, {Q8_K, 256}} {
		if err := a.Prepare(c.t, make([]float32, c.n)); err == nil {
			t.Errorf("Prepare(%s, %d elements) succeeded", c.t, c.n)
		}
		// A failed Prepare leaves nothing usable behind.
		if !panics(func() { MatVecRows(dst, w, &a, 0, 1) }) {
			t.Errorf("MatVecRows after a failed Prepare(%s) did not panic", c.t)
		}
	}
}

func TestMisusePanics(t *testing.T) {
	var a Activation
	if err := a.Prepare(Q8_0, make([]float32, 256)); err != nil {
		t.Fatal(err)
	}
	q4k, _ := NewMatrix(Q4_K, 2, 256, make([]byte, 288))
	q4_0, _ := NewMatrix(Q4_0, 2, 256, make([]byte, 288))
	q4_0wide, _ := NewMatrix(Q4_0, 1, 512, make([]byte, 288))
	dst := make([]float32, 2)
	cases := map[string]func(){
		"format mismatch":     func() { MatVecRows(dst, q4k, &a, 0, 2) },
		"length mismatch":     func() { MatVecRows(dst, q4_0wide, &a, 0, 1) },
		"end past rows":       func() { MatVecRows(make([]float32, 3), q4_0, &a, 0, 3) },
		"end past dst":        func() { MatVecRows(dst[:1], q4_0, &a, 0, 2) },
		"start after end":     func() { MatVecRows(dst, q4_0, &a, 2, 1) },
		"negative start":      func() { MatVecRows(dst, q4_0, &a, -1, 1) },
		"short matrix data":   func() { MatVecRows(dst, Matrix{Q4_0, 2, 256, make([]byte, 200)}, &a, 0, 2) },
		"DotRow short row":    func() { DotRow(Q4_0, make([]byte, 143), &a) },
		"DotRow wrong format": func() { DotRow(Q6_K, make([]byte, 210), &a) },
		"unprepared":          func() { MatVecRows(dst, q4_0, new(Activation), 0, 1) },
	}
	for name, f := range cases {
		if !panics(f) {
			t.Errorf("%s: did not panic", name)
		}
	}
	MatVecRows(dst, q4_0, &a, 1, 1) // an empty range is fine
}

func TestNewMatrixErrors(t *testing.T) {
	cases := []struct {
		name       string
		t          Type
		rows, cols int
		data       int
	}{
		{"short", Q4_K, 2, 256, 287},
		{"long", Q4_K, 2, 256, 289},
		{"partial block", Q8_0, 1, 48, 51},
		{"unsupported", Type(13), 1, 256, 176},
		{"negative rows", F32, -1, 4, 0},
		{"overflow", F32, math.MaxInt / 8, 4, 0},
	}
	for _, c := range cases {
		if _, err := NewMatrix(c.t, c.rows, c.cols, make([]byte, c.data)); err == nil {
			t.Errorf("%s: NewMatrix(%s, %d, %d, %d bytes) succeeded", c.name, c.t, c.rows, c.cols, c.data)
		}
	}
}

// TestActivationShared checks that one Q8_K activation serves Q4_K and Q6_K matrices alike.
func TestActivationShared(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	x := gaussian(r, 256, 1)
	var a Activation
	if err := a.Prepare(Q4_K, x); err != nil {
		t.Fatal(err)
	}
	w6, _ := NewMatrix(Q6_K, 1, 256, randomRows(r, Q6_K, 1, 256))
	var b Activation
	if err := b.Prepare(Q6_K, x); err != nil {
		t.Fatal(err)
	}
	got, want := make([]float32, 1), make([]float32, 1)
	MatVecRows(got, w6, &a, 0, 1)
	MatVecRows(want, w6, &b, 0, 1)
	if got[0] != want[0] {
		t.Errorf("Q6_K through a Q4_K-prepared activation: %g, want %g", got[0], want[0])
	}
}

func TestActivationServes(t *testing.T) {
	var a Activation
	if a.Serves(F32) {
		t.Error("an unprepared activation serves F32")
	}
	x := make([]float32, 256)
	if err := a.Prepare(Q4_K, x); err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[Type]bool{Q4_K: true, Q6_K: true, Q8_0: false, Q4_0: false, F32: false, F16: false} {
		if got := a.Serves(typ); got != want {
			t.Errorf("Q4_K-prepared activation serves %s: %v, want %v", typ, got, want)
		}
	}
	if err := a.Prepare(Q4_K, x[:100]); err == nil || a.Serves(Q4_K) {
		t.Errorf("after a failed Prepare (%v) the activation still serves Q4_K", err)
	}
}

func TestNoAllocation(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for _, typ := range weightTypes {
		x := gaussian(r, 1024, 1)
		w, _ := NewMatrix(typ, 4, 1024, randomRows(r, typ, 4, 1024))
		var a Activation
		dst := make([]float32, 4)
		if err := a.Prepare(typ, x); err != nil { // warm up
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(20, func() {
			if err := a.Prepare(typ, x); err != nil {
				t.Fatal(err)
			}
			MatVecRows(dst, w, &a, 0, 4)
			DotRow(typ, w.Data[:len(w.Data)/4], &a)
			DequantizeRow(w, 2, x)
		})
		if allocs != 0 {
			t.Errorf("%s: %g allocations per Prepare+MatVecRows+DotRow+DequantizeRow", typ, allocs)
		}
	}
}
