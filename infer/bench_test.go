package infer

import (
	"context"
	"flag"
	"testing"
)

// BenchmarkStoriesDecode reports decode speed on the bundled model; the
// next engine issue measures its kernels against this.
func BenchmarkStoriesDecode(b *testing.B) {
	s, err := loadStoriesWith(b, Options{Threads: benchThreads}).NewSession(512)
	if err != nil {
		b.Fatal(err)
	}
	tokens := 0
	for b.Loop() {
		s.Reset()
		res, err := s.Generate(context.Background(), Request{Prompt: "Once upon a time", MaxTokens: 256}, func(Token) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		tokens += len(res.GeneratedIDs)
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkStoriesForward is one token through the model at a short
// context: the decode step itself, without sampling or detokenising.
func BenchmarkStoriesForward(b *testing.B) {
	s, err := loadStoriesWith(b, Options{Threads: benchThreads}).NewSession(512)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if len(s.cached) >= 64 {
			s.Reset()
		}
		if err := s.forward(403); err != nil {
			b.Fatal(err)
		}
	}
}

// benchThreads is 0 (one per CPU) unless a run sets it with -threads.
var benchThreads int

func init() {
	flag.IntVar(&benchThreads, "threads", 0, "engine threads in benchmarks (0: one per CPU)")
}
