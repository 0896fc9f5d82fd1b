package infer

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/infer/sample"
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

// BenchmarkStoriesForward is one decode step of one sequence at a short
// context: the forward pass, sampling and detokenising, through the engine.
func BenchmarkStoriesForward(b *testing.B) {
	m := loadStoriesWith(b, Options{Threads: benchThreads})
	e, err := m.NewEngine(EngineConfig{ContextLength: 128})
	if err != nil {
		b.Fatal(err)
	}
	var seqs [1]*Sequence
	start := func() {
		if seqs[0] != nil {
			e.Release(seqs[0])
		}
		s, err := e.NewSequence(Request{Prompt: "Once upon a time", Sampling: sample.Params{Temperature: 0}}, func(Token) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		if ok, err := e.Admit(s); !ok {
			b.Fatal("admit", err)
		}
		seqs[0] = s
		e.Step(seqs[:]) // the prompt
	}
	start()
	b.ReportAllocs()
	for b.Loop() {
		if seqs[0].Done() {
			b.StopTimer()
			start()
			b.StartTimer()
		}
		e.Step(seqs[:])
	}
}

// benchThreads is 0 (one per CPU) unless a run sets it with -threads.
var benchThreads int

func init() {
	flag.IntVar(&benchThreads, "threads", 0, "engine threads in benchmarks (0: one per CPU)")
}

// BenchmarkStories110mStep is one decode step of batches of 1, 4 and 8
// sequences on the 134M Q8_0 model; tokens/s counts every sequence's token.
func BenchmarkStories110mStep(b *testing.B) {
	m := loadStories110m(b)
	for _, n := range []int{1, 4, 8} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			e, err := m.NewEngine(EngineConfig{MaxSequences: n, ContextLength: 1024})
			if err != nil {
				b.Fatal(err)
			}
			seqs := make([]*Sequence, n)
			start := func(i int) {
				if seqs[i] != nil {
					e.Release(seqs[i])
				}
				s, err := e.NewSequence(Request{Prompt: batchPrompts[i], MaxTokens: 900, Sampling: sample.Params{Temperature: 0}},
					func(Token) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				if ok, err := e.Admit(s); !ok {
					b.Fatal("admit", err)
				}
				seqs[i] = s
			}
			for i := range seqs {
				start(i)
			}
			e.Step(seqs) // the prompts
			for b.Loop() {
				for i, s := range seqs {
					if s.Done() {
						b.StopTimer()
						start(i)
						e.Step(seqs[i : i+1])
						b.StartTimer()
					}
				}
				e.Step(seqs)
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
}

// BenchmarkStories110mPrompt evaluates a 64-token prompt on the 134M Q8_0
// model, with nothing cached; tokens/s counts prompt tokens.
func BenchmarkStories110mPrompt(b *testing.B) {
	m := loadStories110m(b)
	s, err := m.NewSession(256)
	if err != nil {
		b.Fatal(err)
	}
	prompt := strings.Repeat(" hello world", 31)
	tokens := 0
	for b.Loop() {
		s.Reset()
		res, err := s.Generate(context.Background(), Request{Prompt: prompt, MaxTokens: 1, Sampling: sample.Params{Temperature: 0}},
			func(Token) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		tokens += res.Timings.PromptTokens
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}
