package vec

import (
	"math"
	"math/rand/v2"
	"testing"
)

// Attention at head dim 64 over 1024 cached positions, with the K/V rows of two KV heads
// interleaved (stride 128), and the elementwise ops over 2048 values. "asm" is the exported
// function (the assembly on AVX2 machines), "go" the plain Go version it falls back to, and
// "scalar" a straightforward Go loop of the kind the engine ran before this package (no ggml order).
const (
	benchHead   = 64
	benchPos    = 1024
	benchStride = 128
	benchN      = 2048
)

func benchKV() ([]float32, []uint16, []float32) {
	r := rand.New(rand.NewPCG(21, 22))
	q := make([]float32, benchHead)
	for i := range q {
		q[i] = float32(r.NormFloat64())
	}
	RoundF16(q, q)
	kv := make([]uint16, benchPos*benchStride)
	for i := range kv {
		kv[i] = f32ToF16(float32(r.NormFloat64()))
	}
	p := make([]float32, benchPos)
	for i := range p {
		p[i] = float32(r.Float64()) / benchPos
	}
	return q, kv, p
}

func BenchmarkDotsF16(b *testing.B) {
	q, k, _ := benchKV()
	dst := make([]float32, benchPos)
	b.Run("asm", func(b *testing.B) {
		for b.Loop() {
			DotsF16(dst, q, k, benchStride)
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			dotsF16Go(dst, q, k, benchStride)
		}
	})
	b.Run("scalar", func(b *testing.B) {
		for b.Loop() {
			for t := range dst {
				row := k[t*benchStride : t*benchStride+benchHead]
				var s0, s1 float32
				for i := 0; i < benchHead; i += 2 {
					s0 += q[i] * f16Table[row[i]]
					s1 += q[i+1] * f16Table[row[i+1]]
				}
				dst[t] = s0 + s1
			}
		}
	})
}

func BenchmarkAxpysF16(b *testing.B) {
	_, v, p := benchKV()
	out := make([]float32, benchHead)
	b.Run("asm", func(b *testing.B) {
		for b.Loop() {
			clear(out)
			AxpysF16(out, p, v, benchStride)
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			clear(out)
			axpysF16Go(out, p, v, benchStride)
		}
	})
	b.Run("scalar", func(b *testing.B) {
		for b.Loop() {
			clear(out)
			for t, pt := range p {
				row := v[t*benchStride : t*benchStride+benchHead]
				for d, h := range row {
					out[d] += pt * f16Table[h]
				}
			}
		}
	})
}

func benchValues(spread float64) []float32 {
	r := rand.New(rand.NewPCG(23, 24))
	x := make([]float32, benchN)
	for i := range x {
		x[i] = float32(r.NormFloat64() * spread)
	}
	return x
}

func BenchmarkSoftmax(b *testing.B) {
	src := benchValues(3)
	x := make([]float32, len(src))
	b.Run("asm", func(b *testing.B) {
		for b.Loop() {
			copy(x, src)
			Softmax(x)
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			copy(x, src)
			softmaxGo(x)
		}
	})
	b.Run("scalar", func(b *testing.B) {
		for b.Loop() {
			copy(x, src)
			m := x[0]
			for _, v := range x[1:] {
				m = max(m, v)
			}
			var sum float64
			for i, v := range x {
				e := float32(math.Exp(float64(v - m)))
				x[i] = e
				sum += float64(e)
			}
			inv := float32(1 / sum)
			for i := range x {
				x[i] *= inv
			}
		}
	})
}

func BenchmarkSwiGLU(b *testing.B) {
	src := benchValues(2)
	up := benchValues(1)
	x := make([]float32, len(src))
	b.Run("asm", func(b *testing.B) {
		for b.Loop() {
			copy(x, src)
			SwiGLU(x, up)
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			copy(x, src)
			swigluGo(x, up)
		}
	})
	b.Run("scalar", func(b *testing.B) {
		for b.Loop() {
			copy(x, src)
			for i, g := range x {
				x[i] = g / (1 + float32(math.Exp(float64(-g)))) * up[i]
			}
		}
	})
}

func BenchmarkRoundF16(b *testing.B) {
	src := benchValues(1)
	x := make([]float32, len(src))
	b.Run("asm", func(b *testing.B) {
		for b.Loop() {
			RoundF16(x, src)
		}
	})
	b.Run("go", func(b *testing.B) {
		for b.Loop() {
			roundF16Go(x, src)
		}
	})
}
