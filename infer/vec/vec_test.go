package vec

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// The exported functions (the assembly where the CPU has AVX2, FMA and F16C) are held to the Go
// versions bit for bit: same operations, same order, same roundings. Where results are NaN only
// NaN-ness is compared (NaN payloads may differ between a float64 emulation and the hardware).

func sameBits(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || a != a && b != b
}

func checkSame(t *testing.T, what string, got, want []float32) {
	t.Helper()
	for i := range want {
		if !sameBits(got[i], want[i]) {
			t.Fatalf("%s: element %d of %d: %g (%#x), Go version %g (%#x)", what, i, len(want),
				got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}

// halfOf returns a finite half near a Gaussian value of the given spread, sometimes a subnormal.
func halfOf(r *rand.Rand, spread float64) uint16 {
	if r.IntN(16) == 0 {
		return uint16(r.IntN(0x400)) | uint16(r.IntN(2))<<15 // subnormal or zero
	}
	return f32ToF16(float32(r.NormFloat64() * spread))
}

// specialHalves are halves the conversions must get right: zeros, subnormals, the largest finite,
// infinities, quiet and signalling NaNs.
var specialHalves = []uint16{0, 0x8000, 1, 0x8001, 0x3ff, 0x400, 0x7bff, 0xfbff, 0x7c00, 0xfc00,
	0x7c01, 0x7dff, 0x7e00, 0x7fff, 0xfc01, 0xfe00, 0xffff, 0x3c00, 0xbc00}

func TestFromF16AllHalves(t *testing.T) {
	src := make([]uint16, 1<<16)
	for i := range src {
		src[i] = uint16(i)
	}
	got := make([]float32, len(src))
	FromF16(got, src)
	for i, h := range src {
		want := f16ToF32(h)
		if math.Float32bits(got[i]) != math.Float32bits(want) {
			t.Fatalf("FromF16(%#04x) = %#08x, Go version %#08x", h, math.Float32bits(got[i]), math.Float32bits(want))
		}
	}
	// Every half survives the round trip, NaNs made quiet.
	back := make([]uint16, len(got))
	ToF16(back, got)
	for i, h := range src {
		want := h
		if h&0x7c00 == 0x7c00 && h&0x3ff != 0 {
			want |= 0x200
		}
		if back[i] != want {
			t.Fatalf("ToF16(FromF16(%#04x)) = %#04x", h, back[i])
		}
	}
	// Odd lengths and offsets run the tails.
	for n := range 20 {
		out := make([]float32, n)
		FromF16(out, src[0x3c00+n:0x3c00+2*n])
		checkSame(t, "FromF16 tail", out, got[0x3c00+n:0x3c00+2*n])
	}
}

// float32 inputs for the F16 conversions: uniform bit patterns (every exponent, NaNs, infinities,
// float32 subnormals), values around half midpoints and the overflow and underflow thresholds.
func conversionInputs(r *rand.Rand, n int) []float32 {
	x := make([]float32, 0, n)
	for _, b := range []uint32{0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffc00001,
		0x7fbfffff, 0x1, 0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, 0x33000000, 0x33000001, 0x32ffffff,
		0x38800000, 0x387fc000, 0x387fe000, 0x33800000, 0x33c00000} {
		x = append(x, math.Float32frombits(b))
	}
	for len(x) < n {
		switch r.IntN(3) {
		case 0:
			x = append(x, math.Float32frombits(r.Uint32()))
		case 1: // a half value plus or minus a few float32 ulps: ties and near-ties
			h := math.Float32bits(f16ToF32(halfOf(r, 100)))
			mid := h + 1<<12 // half an F16 ulp above, for normal halves
			x = append(x, math.Float32frombits(mid+uint32(r.IntN(5))-2))
		default:
			x = append(x, float32(r.NormFloat64()*math.Pow(2, float64(r.IntN(40)-25))))
		}
	}
	return x
}

func TestRoundF16AndToF16(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	src := conversionInputs(r, 100000)
	got := make([]float32, len(src))
	RoundF16(got, src)
	want := make([]float32, len(src))
	roundF16Go(want, src)
	for i := range src {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("RoundF16(%#08x) = %#08x, Go version %#08x", math.Float32bits(src[i]),
				math.Float32bits(got[i]), math.Float32bits(want[i]))
		}
	}
	h := make([]uint16, len(src))
	ToF16(h, src)
	for i, v := range src {
		if w := f32ToF16(v); h[i] != w {
			t.Fatalf("ToF16(%#08x) = %#04x, Go version %#04x", math.Float32bits(v), h[i], w)
		}
	}
	for n := range 40 { // tails, and dst == src
		x := append([]float32(nil), src[n:2*n]...)
		RoundF16(x, x)
		checkSame(t, "RoundF16 in place", x, want[n:2*n])
	}
}

// TestConversionsExhaustive checks every float32 (VEC_EXHAUSTIVE=1; about a minute).
func TestConversionsExhaustive(t *testing.T) {
	if os.Getenv("VEC_EXHAUSTIVE") == "" {
		t.Skip("set VEC_EXHAUSTIVE=1 to convert all 2^32 float32 values")
	}
	const chunk = 1 << 16
	src := make([]float32, chunk)
	h := make([]uint16, chunk)
	for hi := uint32(0); hi < 1<<16; hi++ {
		for i := range src {
			src[i] = math.Float32frombits(hi<<16 | uint32(i))
		}
		ToF16(h, src)
		for i, v := range src {
			if w := f32ToF16(v); h[i] != w {
				t.Fatalf("ToF16(%#08x) = %#04x, Go version %#04x", math.Float32bits(v), h[i], w)
			}
		}
	}
}

func TestDotsF16(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 400 {
		n := 1 + r.IntN(300)
		if trial < 16 {
			n = []int{1, 7, 8, 31, 32, 33, 63, 64, 65, 80, 96, 128, 129, 256, 257, 300}[trial]
		}
		nt := 1 + r.IntN(20)
		stride := n + r.IntN(3)*r.IntN(50)
		if nt == 1 {
			stride = r.IntN(n + 5) // anything: only key 0 is read
		}
		k := make([]uint16, (nt-1)*stride+n)
		for i := range k {
			k[i] = halfOf(r, 1)
		}
		if trial%10 == 0 { // a special value somewhere: Inf or NaN scores, compared as NaN-or-bits
			k[r.IntN(len(k))] = specialHalves[r.IntN(len(specialHalves))]
		}
		q := make([]float32, n)
		for i := range q {
			q[i] = float32(r.NormFloat64())
		}
		RoundF16(q, q)
		got := make([]float32, nt+1)
		got[nt] = 42
		DotsF16(got[:nt], q, k, stride)
		if got[nt] != 42 {
			t.Fatalf("DotsF16 wrote past dst")
		}
		want := make([]float32, nt)
		dotsF16Go(want, q, k, stride)
		checkSame(t, "DotsF16", got[:nt], want)
		// Against the float64 dot: only float32 rounding separates them.
		for ti := range nt {
			var exact, mag float64
			for i := range n {
				v := float64(f16ToF32(k[ti*stride+i])) * float64(q[i])
				exact += v
				mag += math.Abs(v)
			}
			if d := math.Abs(float64(want[ti]) - exact); d > 1e-6*mag+1e-30 && !math.IsNaN(d) && !math.IsInf(exact, 0) {
				t.Fatalf("DotsF16 n %d key %d: %g, float64 dot %g", n, ti, want[ti], exact)
			}
		}
	}
}

func TestAxpysF16(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := range 400 {
		nd := 1 + r.IntN(300)
		if trial < 12 {
			nd = []int{1, 7, 8, 9, 63, 64, 65, 72, 128, 136, 199, 300}[trial]
		}
		nt := 1 + r.IntN(50)
		stride := nd + r.IntN(3)*r.IntN(40)
		v := make([]uint16, (nt-1)*stride+nd)
		for i := range v {
			v[i] = halfOf(r, 1)
		}
		if trial%10 == 0 {
			v[r.IntN(len(v))] = specialHalves[r.IntN(len(specialHalves))]
		}
		p := make([]float32, nt)
		for i := range p {
			p[i] = float32(r.Float64())
		}
		RoundF16(p, p)
		start := make([]float32, nd)
		for i := range start {
			start[i] = float32(r.NormFloat64())
		}
		got := append(make([]float32, 0, nd+1), start...)
		got = append(got, 42)
		AxpysF16(got[:nd], p, v, stride)
		if got[nd] != 42 {
			t.Fatalf("AxpysF16 wrote past out")
		}
		want := append([]float32(nil), start...)
		axpysF16Go(want, p, v, stride)
		checkSame(t, "AxpysF16", got[:nd], want)
		// Split into two calls in order: the same bits.
		split := append([]float32(nil), start...)
		cut := r.IntN(nt + 1)
		AxpysF16(split, p[:cut], v, stride)
		if cut < nt {
			AxpysF16(split, p[cut:], v[cut*stride:], stride)
		}
		checkSame(t, "AxpysF16 split", split, want)
	}
}

// softmaxGo is Softmax with the Go versions.
func softmaxGo(x []float32) {
	m := maxF32Go(x)
	n8 := len(x) &^ 7
	sum := expSubGo(x[:n8], m)
	for i := n8; i < len(x); i++ {
		e := expf(x[i] - m)
		sum += float64(e)
		x[i] = e
	}
	scaleGo(x, float32(1/sum))
}

func swigluGo(gate, up []float32) {
	n8 := len(gate) &^ 7
	swiglu8Go(gate[:n8], up[:n8])
	for i := n8; i < len(gate); i++ {
		x := gate[i]
		gate[i] = x / (1 + expf(-x)) * up[i]
	}
}

func TestSoftmax(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := range 600 {
		n := 1 + r.IntN(300)
		spread := []float64{1, 10, 60}[trial%3] // 60: many exponentials underflow through the slow path
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * spread)
		}
		if trial%7 == 0 {
			x[r.IntN(n)] = float32(math.Inf(-1)) // a masked position
		}
		got := append([]float32(nil), x...)
		Softmax(got)
		want := append([]float32(nil), x...)
		softmaxGo(want)
		checkSame(t, "Softmax", got, want)
		var sum float64
		for _, v := range got {
			sum += float64(v)
		}
		if math.Abs(sum-1) > 1e-5 {
			t.Fatalf("Softmax of %d values sums to %g", n, sum)
		}
	}
}

func TestSwiGLU(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for trial := range 600 {
		n := 1 + r.IntN(300)
		spread := []float64{1, 10, 100}[trial%3] // 100: exp(-x) overflows and underflows
		gate := make([]float32, n)
		up := make([]float32, n)
		for i := range gate {
			gate[i] = float32(r.NormFloat64() * spread)
			up[i] = float32(r.NormFloat64())
		}
		got := append([]float32(nil), gate...)
		SwiGLU(got, up)
		want := append([]float32(nil), gate...)
		swigluGo(want, up)
		checkSame(t, "SwiGLU", got, want)
		for i, g := range gate {
			silu := float64(g) / (1 + math.Exp(-float64(g))) * float64(up[i])
			switch {
			case -g > 88.8: // exp(-g) is infinity in float32 ("numbers above 88.38 will flush to infinity")
				silu = 0
			case -g > 88.3:
				continue // where ggml_v_expf starts to flush, either is right
			}
			if d := math.Abs(float64(got[i]) - silu); d > 5e-7*math.Abs(silu)+1e-37 {
				t.Fatalf("SwiGLU(%g, %g) = %g, float64 %g", g, up[i], got[i], silu)
			}
		}
	}
}

// ulps is the distance in float32 steps between a and b (both finite, same sign or zero).
func ulps(a, b float32) int64 {
	d := int64(math.Float32bits(a)) - int64(math.Float32bits(b))
	return max(d, -d)
}

// TestExpGGML measures ggml_v_expf against the correctly rounded exp over its whole range: ggml
// states 1.45358 ulp plus 0.5 for rounding; results that are float32 subnormals lose precision by
// design (2^n is split so they are still produced) and are checked relatively.
func TestExpGGML(t *testing.T) {
	var worst, worstMid int64
	var worstX float32
	for x := float32(-104); x < 89; x += 0x1p-9 {
		got := expGGML(x)
		want := float32(math.Exp(float64(x)))
		if want < 0x1p-126 {
			if d := math.Abs(float64(got) - math.Exp(float64(x))); d > 0x1p-148 {
				t.Fatalf("expGGML(%g) = %g, exp %g", x, got, want)
			}
			continue
		}
		u := ulps(got, want)
		if u > worst {
			worst, worstX = u, x
		}
		if x > -80 && x < 80 && u > worstMid {
			worstMid = u
		}
	}
	if worst > 2 {
		t.Errorf("expGGML is %d ulps from exp at %g", worst, worstX)
	}
	t.Logf("expGGML: at most %d ulp from float32(math.Exp) on [-104, 89) in steps of 2^-9 (worst at %g), %d on (-80, 80)",
		worst, worstX, worstMid)
	for _, c := range []struct{ x, want float32 }{
		{0, 1}, {float32(math.Inf(-1)), 0}, {float32(math.Inf(1)), float32(math.Inf(1))}, {-200, 0}, {100, float32(math.Inf(1))},
	} {
		if got := expGGML(c.x); got != c.want {
			t.Errorf("expGGML(%g) = %g, want %g", c.x, got, c.want)
		}
	}
	// The assembly over the same points, eight at a time (expSub with m = 0).
	var xs []float32
	for x := float32(-110); x < 95; x += 0x1p-7 {
		xs = append(xs, x)
	}
	xs = xs[:len(xs)&^7]
	got := append([]float32(nil), xs...)
	expSub(got, 0)
	want := append([]float32(nil), xs...)
	expSubGo(want, 0)
	checkSame(t, "expSub", got, want)
}

func TestFMA32(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for range 100000 {
		a, b, c := float32(r.NormFloat64()), float32(r.NormFloat64()), float32(r.NormFloat64())
		d := math.FMA(float64(a), float64(b), float64(c))
		if got := fma32(a, b, c); got != float32(d) && math.Float64bits(d)&(1<<29-1) != 1<<28 {
			t.Fatalf("fma32(%g, %g, %g) = %g, want %g", a, b, c, got, float32(d))
		}
	}
	// 1 + 2^-23 + (2^-24 - 2^-60) is just below the float32 midpoint 1 + 3*2^-24: it rounds down to
	// 1 + 2^-23. Rounded to float64 first it becomes the midpoint, which rounds to even (up).
	a, b, c := float32(0x1p-12+0x1p-30), float32(0x1p-12-0x1p-30), float32(1+0x1p-23)
	if got := fma32(a, b, c); got != c {
		t.Errorf("fma32 rounds the double-rounding case to 1%+g, want 1%+g", got-1, c-1)
	}
	if float32(math.FMA(float64(a), float64(b), float64(c))) == c {
		t.Errorf("the double-rounding case is not one")
	}
}

func TestAddScale(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for n := range 300 {
		a := make([]float32, n+1)
		b := make([]float32, n)
		for i := range b {
			a[i], b[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
		}
		a[n] = 42
		want := append([]float32(nil), a[:n]...)
		addGo(want, b)
		Add(a, b)
		checkSame(t, "Add", a[:n], want)
		s := float32(r.NormFloat64())
		scaleGo(want, s)
		Scale(a[:n], s)
		checkSame(t, "Scale", a[:n], want)
		if a[n] != 42 {
			t.Fatalf("Add or Scale wrote past n")
		}
	}
}

func TestPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"DotsF16 short k":  func() { DotsF16(make([]float32, 3), make([]float32, 64), make([]uint16, 2*80+63), 80) },
		"AxpysF16 short v": func() { AxpysF16(make([]float32, 64), make([]float32, 3), make([]uint16, 2*80+63), 80) },
		"SwiGLU short up":  func() { SwiGLU(make([]float32, 9), make([]float32, 8)) },
		"RoundF16 short":   func() { RoundF16(make([]float32, 3), make([]float32, 4)) },
		"ToF16 short":      func() { ToF16(make([]uint16, 3), make([]float32, 4)) },
		"FromF16 short":    func() { FromF16(make([]float32, 3), make([]uint16, 4)) },
		"Add short":        func() { Add(make([]float32, 3), make([]float32, 4)) },
		"DotsF16 stride":   func() { DotsF16(make([]float32, 2), make([]float32, 4), make([]uint16, 100), -1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	// Exact fits do not panic, and empty inputs do nothing.
	DotsF16(make([]float32, 3), make([]float32, 64), make([]uint16, 2*80+64), 80)
	AxpysF16(make([]float32, 64), make([]float32, 3), make([]uint16, 2*80+64), 80)
	DotsF16(nil, nil, nil, 0)
	AxpysF16(nil, nil, nil, 0)
	Softmax(nil)
	SwiGLU(nil, nil)
}

func TestNoAllocation(t *testing.T) {
	q := make([]float32, 64)
	k := make([]uint16, 64*100)
	dst := make([]float32, 100)
	x := make([]float32, 300)
	h := make([]uint16, 300)
	for i := range x {
		x[i] = float32(i%17) - 8
	}
	for name, f := range map[string]func(){
		"DotsF16":  func() { DotsF16(dst, q, k, 64) },
		"AxpysF16": func() { AxpysF16(q, dst, k, 64) },
		"Softmax":  func() { Softmax(x) },
		"SwiGLU":   func() { SwiGLU(x, x) },
		"RoundF16": func() { RoundF16(x, x) },
		"ToF16":    func() { ToF16(h, x) },
		"FromF16":  func() { FromF16(x, h) },
		"Add":      func() { Add(x, x) },
		"Scale":    func() { Scale(x, 0.5) },
	} {
		if a := testing.AllocsPerRun(10, f); a != 0 {
			t.Errorf("%s: %g allocations", name, a)
		}
	}
}
