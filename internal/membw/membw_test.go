package membw

import (
	"math/rand/v2"
	"testing"
)

// The installed loop (assembly where the CPU has AVX2) XORs the same words
// as the Go loop, for every length it accepts.
func TestReadMatchesGo(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 64*chunk+100)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	for _, n := range []int{0, 1, chunk - 1, chunk, 2 * chunk, 3*chunk + 17, 64 * chunk} {
		want := uint64(0)
		if m := n - n%chunk; m > 0 {
			want = readGo(b[:m])
		}
		if got := Read(b[:n]); got != want {
			t.Errorf("Read of %d bytes (%s) = %#x, want %#x", n, kernelName(), got, want)
		}
	}
	// Offsets that are not 32-byte aligned must work too.
	if got, want := Read(b[3:3+8*chunk]), readGo(b[3:3+8*chunk]); got != want {
		t.Errorf("unaligned Read = %#x, want %#x", got, want)
	}
}

func TestMeasure(t *testing.T) {
	r, err := Measure(2, 1<<20, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.GBps) != 2 || r.Best <= 0 || r.Threads != 2 || r.BufferBytes != 1<<20 {
		t.Errorf("Measure = %+v", r)
	}
	if _, err := Measure(0, 1<<20, 1, 1); err == nil {
		t.Error("Measure with 0 threads: no error")
	}
}

// A regression to legacy SSE or a missing VZEROUPPER shows here as a
// collapse of the rate on a buffer that stays in cache.
func BenchmarkRead(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		Read(buf)
	}
}

func BenchmarkReadGo(b *testing.B) {
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		readGo(buf)
	}
}
