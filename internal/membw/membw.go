// Package membw measures how fast this machine streams memory into the
// CPU: the limit a decode step that reads every weight once cannot beat.
package membw

import (
	"fmt"
	"runtime"
	"sync"
	"time"
	"unsafe"
)

// chunk is the unit the read loops work in: buffers are a multiple of it.
const chunk = 256

// Result is one measurement: Threads goroutines each reading its own buffer
// of BufferBytes, Passes times, best of len(GBps) runs.
type Result struct {
	Threads     int       `json:"threads"`
	BufferBytes int       `json:"buffer_bytes"`
	Passes      int       `json:"passes"`
	Kernel      string    `json:"kernel"`
	GBps        []float64 `json:"gbps"` // each run, in 1e9 bytes per second
	Best        float64   `json:"best_gbps"`
}

// Measure has each of threads goroutines stream its own buffer of
// bufferBytes (rounded down to 256 bytes) passes times, runs times, and
// reports the aggregate read rate of every run and the best.
func Measure(threads, bufferBytes, passes, runs int) (Result, error) {
	bufferBytes -= bufferBytes % chunk
	if threads < 1 || bufferBytes < chunk || passes < 1 || runs < 1 {
		return Result{}, fmt.Errorf("membw: want threads, passes and runs >= 1 and a buffer of at least %d bytes, got %d, %d, %d and %d",
			chunk, threads, passes, runs, bufferBytes)
	}
	bufs := make([][]byte, threads)
	for i := range bufs {
		bufs[i] = make([]byte, bufferBytes)
	}
	// Touch every page (and give the words distinct values) before timing,
	// so that page faults are not measured.
	var fill sync.WaitGroup
	for i, b := range bufs {
		fill.Go(func() {
			w := unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8)
			for j := range w {
				w[j] = uint64(j) ^ uint64(i)<<56
			}
		})
	}
	fill.Wait()

	res := Result{Threads: threads, BufferBytes: bufferBytes, Passes: passes, Kernel: kernelName()}
	sinks := make([]uint64, threads*8) // one cache line apart
	for range runs {
		var ready, done sync.WaitGroup
		start := make(chan struct{})
		ready.Add(threads)
		for i, b := range bufs {
			done.Go(func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				ready.Done()
				<-start
				var x uint64
				for range passes {
					x ^= Read(b)
				}
				sinks[i*8] = x
			})
		}
		ready.Wait()
		t0 := time.Now()
		close(start)
		done.Wait()
		d := time.Since(t0)
		gbps := float64(threads) * float64(bufferBytes) * float64(passes) / d.Seconds() / 1e9
		res.GBps = append(res.GBps, gbps)
		res.Best = max(res.Best, gbps)
	}
	runtime.KeepAlive(sinks)
	return res, nil
}

// Read streams b (whose length is a multiple of 256 bytes; a tail is
// ignored) and returns the XOR of its 64-bit little-endian words, so that
// the loads cannot be skipped.
func Read(b []byte) uint64 {
	n := len(b) - len(b)%chunk
	if n == 0 {
		return 0
	}
	return read(b[:n])
}

// readGo is the portable loop, and the oracle for the assembly one.
func readGo(b []byte) uint64 {
	w := unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8)
	var x0, x1, x2, x3, x4, x5, x6, x7 uint64
	for i := 0; i+8 <= len(w); i += 8 {
		x0 ^= w[i]
		x1 ^= w[i+1]
		x2 ^= w[i+2]
		x3 ^= w[i+3]
		x4 ^= w[i+4]
		x5 ^= w[i+5]
		x6 ^= w[i+6]
		x7 ^= w[i+7]
	}
	return x0 ^ x1 ^ x2 ^ x3 ^ x4 ^ x5 ^ x6 ^ x7
}
