package infer

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/infer/synth"
)

// stories110mQ8 is the sha256 of the 134M-parameter synthetic llama (the
// stories110m shape, Q8_0, seed 7) that rbee model synth writes.
const stories110mQ8 = "d6fe41f1c55f664b4734968213b62411ee8e835eacdd1b82f3d2d0353efefb47"

// loadStories110m regenerates (or finds cached) and loads the 134M model.
func loadStories110m(t testing.TB) *Model {
	t.Helper()
	path := synthShapeFile(t, testModelDir(t), "stories110m", synth.Q8_0, stories110mQ8)
	m, err := Load(path, Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// batchPrompts have different lengths, so that in a batch the sequences are
// at different positions, cross block boundaries at different steps, and
// finish their prompts in different steps.
var batchPrompts = []string{
	"Once upon a time, in a village at the edge of a great forest, there lived an old clockmaker who " +
		"repaired every clock in the valley, and every evening he walked to the river to listen to the water " +
		"and count the stars before he went home to his cat.",
	"Hello",
	"The quick brown fox jumps over the lazy dog.",
	"In the beginning",
	"A B C D E F G H I J K L M N O P Q R S T U V W X Y Z and then the numbers one two three four five",
	"Why is the sky blue?",
	"Lily and Ben went to the park to play on the swings, and then they had ice cream.",
	"Tell me a story about a dragon who was afraid of the dark",
}

// generateAll runs reqs together on a scheduler over a fresh engine of cfg
// and returns each one's generated ids.
func generateAll(t *testing.T, m *Model, cfg EngineConfig, reqs []Request) [][]int32 {
	t.Helper()
	e, err := m.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return generateOn(t, e, reqs)
}

func generateOn(t *testing.T, e *Engine, reqs []Request) [][]int32 {
	t.Helper()
	out, _ := generateCounting(t, e, reqs)
	return out
}

// startScheduler runs a scheduler on e until stop is called.
func startScheduler(e *Engine) (s *Scheduler, stop func()) {
	s = NewScheduler(e)
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { s.Run(ctx) })
	return s, func() {
		cancel()
		run.Wait()
	}
}

// generateCounting is generateOn that also returns how often the
// scheduler preempted a request.
//
// The requests are all submitted, in order, before the scheduler runs, so
// it forms the same batches, and preempts the same requests, every time:
// arriving while it ran, they met it at steps that differed from run to run.
func generateCounting(t *testing.T, e *Engine, reqs []Request) ([][]int32, int) {
	t.Helper()
	s := NewScheduler(e)
	out := make([][]int32, len(reqs))
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, req := range reqs {
		wg.Go(func() {
			res, err := s.Generate(context.Background(), req, func(Token) error { return nil })
			out[i], errs[i] = res.GeneratedIDs, err
		})
		deadline := time.Now().Add(10 * time.Second)
		for s.InFlight() <= i {
			if time.Now().After(deadline) {
				t.Fatalf("request %d was not submitted within 10s", i)
			}
			runtime.Gosched()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	run.Go(func() { s.Run(ctx) })
	defer func() {
		cancel()
		run.Wait()
	}()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	return out, s.Preemptions()
}

func greedy(prompt string, n int) Request {
	return Request{Prompt: prompt, MaxTokens: n, Sampling: sample.Params{Temperature: 0}}
}

// TestBatchInvariance is the promise failover is built on: a request's
// tokens do not depend on what else is in the batch, on the prompt chunk
// size, or on whether its prompt came from the prefix cache.
func TestBatchInvariance(t *testing.T) {
	if testing.Short() {
		t.Skip("the 134M model takes a few seconds")
	}
	m := loadStories110m(t)
	const n = 12
	target := greedy(batchPrompts[0], n)
	alone := generateAll(t, m, EngineConfig{ContextLength: 256}, []Request{target})[0]
	if len(alone) != n {
		t.Fatalf("alone: %d tokens, want %d", len(alone), n)
	}
	check := func(what string, got []int32) {
		t.Helper()
		if !slices.Equal(got, alone) {
			t.Errorf("%s: %v, alone %v", what, got, alone)
		}
	}
	for _, chunk := range []int{1, 7, 64} {
		got := generateAll(t, m, EngineConfig{ContextLength: 256, StepTokens: chunk}, []Request{target})[0]
		check(fmt.Sprintf("alone, prompt chunks of %d", chunk), got)
	}
	for _, others := range []int{3, 7} {
		reqs := []Request{target}
		for i := 1; i <= others; i++ {
			reqs = append(reqs, greedy(batchPrompts[i], 3+3*i))
		}
		got := generateAll(t, m, EngineConfig{MaxSequences: others + 1, ContextLength: 256, StepTokens: 48}, reqs)
		check(fmt.Sprintf("batched with %d others", others), got[0])
	}

	e, err := m.NewEngine(EngineConfig{MaxSequences: 2, ContextLength: 256})
	if err != nil {
		t.Fatal(err)
	}
	generateOn(t, e, []Request{target})
	seq, err := e.NewSequence(target, func(Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := e.Admit(seq); !ok {
		t.Fatal("admit", err)
	}
	if cached := len(seq.tokens) - seq.pending(); cached != len(seq.tokens)-1 {
		t.Errorf("the repeated prompt found %d of %d tokens cached, want all but the last", cached, len(seq.tokens))
	}
	e.Release(seq)
	check("from the prefix cache", generateOn(t, e, []Request{target})[0])
}

// TestResumeContinuesExactly re-creates a seeded, sampled request from its
// prompt, seed and the tokens it produced, alone and inside a batch: it
// must go on with the very ids of the original run.
func TestResumeContinuesExactly(t *testing.T) {
	if testing.Short() {
		t.Skip("the 134M model takes a few seconds")
	}
	m := loadStories110m(t)
	req := Request{Prompt: batchPrompts[2], MaxTokens: 16,
		Sampling: sample.Params{Temperature: 1.2, TopK: 50, TopP: 0.95, RepeatPenalty: 1.1, HasSeed: true, Seed: 42}}
	cfg := EngineConfig{MaxSequences: 4, ContextLength: 256, StepTokens: 32}
	orig := generateAll(t, m, cfg, []Request{req})[0]
	for _, at := range []int{1, 9} {
		resumed := req
		resumed.Resume = orig[:at]
		reqs := []Request{resumed, greedy(batchPrompts[3], 8), greedy(batchPrompts[4], 4)}
		got := generateAll(t, m, cfg, reqs)[0]
		if !slices.Equal(got, orig) {
			t.Errorf("resumed after %d tokens: %v, original %v", at, got, orig)
		}
	}
}

// TestKVPoolExhaustion runs more context than the pool holds: requests wait
// for room, running ones pause and resume when the pool runs dry, and every
// answer is still exactly what it is alone. A request larger than the pool
// gets ErrKVExhausted.
func TestKVPoolExhaustion(t *testing.T) {
	m := loadStories(t)
	var reqs []Request
	for i, p := range batchPrompts {
		reqs = append(reqs, greedy(p, 20+5*i))
	}
	want := generateAll(t, m, EngineConfig{MaxSequences: len(reqs), ContextLength: 128}, reqs)
	// Room for about three sequences at once, where eight run.
	small := EngineConfig{MaxSequences: len(reqs), ContextLength: 128, KVTokens: 3 * 80}
	e, err := m.NewEngine(small)
	if err != nil {
		t.Fatal(err)
	}
	got, preempted := generateCounting(t, e, reqs)
	if preempted == 0 {
		t.Error("no request was preempted: the pool was not small enough to test that")
	}
	for i := range reqs {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("request %d with a small pool: %v, with room: %v", i, got[i], want[i])
		}
	}
	if inUse, peak, total := e.KVStats(); inUse != 0 || peak > total {
		t.Errorf("after the run: %d blocks in use, peak %d of %d", inUse, peak, total)
	}
	if err := e.kv.check(); err != nil {
		t.Error(err)
	}

	tiny, err := m.NewEngine(EngineConfig{ContextLength: 128, KVTokens: 32})
	if err != nil {
		t.Fatal(err)
	}
	s, stop := startScheduler(tiny)
	defer stop()
	long := strings.Repeat("the cat sat on the mat ", 10)
	if _, err := s.Generate(context.Background(), greedy(long, 4), func(Token) error { return nil }); err == nil ||
		!strings.Contains(err.Error(), ErrKVExhausted.Error()) {
		t.Errorf("a prompt larger than the pool: %v, want %v", err, ErrKVExhausted)
	}
	res, err := s.Generate(context.Background(), greedy("Once upon a time", 60), func(Token) error { return nil })
	if err == nil || !strings.Contains(err.Error(), ErrKVExhausted.Error()) || len(res.GeneratedIDs) == 0 {
		t.Errorf("a sequence outgrowing the pool: %d tokens, %v; want some tokens, then %v", len(res.GeneratedIDs), err, ErrKVExhausted)
	}
}

// TestDecodeAllocatesNothing: once a sequence runs, each decode step (the
// forward pass, sampling, detokenising and the stop check) allocates
// nothing, alone and in a batch.
func TestDecodeAllocatesNothing(t *testing.T) {
	m := loadStories(t)
	for _, n := range []int{1, 4} {
		e, err := m.NewEngine(EngineConfig{MaxSequences: n, ContextLength: 512})
		if err != nil {
			t.Fatal(err)
		}
		seqs := make([]*Sequence, n)
		for i := range seqs {
			req := Request{Prompt: batchPrompts[i], MaxTokens: 400, Stop: []string{"zzz"},
				Sampling: sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.9, HasSeed: true, Seed: uint64(i)}}
			if seqs[i], err = e.NewSequence(req, func(Token) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if ok, err := e.Admit(seqs[i]); !ok {
				t.Fatal("admit", err)
			}
		}
		e.Step(seqs) // the prompts
		allocs := testing.AllocsPerRun(100, func() { e.Step(seqs) })
		for _, s := range seqs {
			if s.Done() {
				t.Fatalf("a sequence finished early: %d tokens", len(s.tokens)-s.nPrompt)
			}
		}
		if allocs != 0 {
			t.Errorf("batch of %d: %g allocations per decode step", n, allocs)
		}
	}
}

// synthShapeFile is synthFile for any named shape: the model of that shape
// and type under dir, written unless a file with the wanted sha256 is
// already there.
func synthShapeFile(t testing.TB, dir, shape string, ft synth.FileType, want string) string {
	t.Helper()
	spec, err := synth.Shape(shape)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%s.gguf", spec.Name, strings.ToLower(ft.String())))
	if sum, err := fileSHA256(path); err == nil && sum == want {
		return path
	}
	v, err := synth.ReadVocab("tokenizer/testdata/ggml-vocab-llama-spm.gguf")
	if err != nil {
		t.Fatal(err)
	}
	if err := synth.WriteFile(path, spec, ft, v); err != nil {
		t.Fatal(err)
	}
	if sum, err := fileSHA256(path); err != nil || sum != want {
		t.Fatalf("regenerated %s has sha256 %s (%v), want %s", path, sum, err, want)
	}
	return path
}

// TestLogitsDoNotDependOnTheChunk holds every operation of the forward pass
// to batch invariance bit for bit: the bundled model's logits at each of
// 300 positions are the same whether the tokens go through one at a time
// or in chunks of 7, 64 and 128. (An element-wise op that handled the
// batch as one long vector once broke this: its scalar tail moved with the
// batch size.)
func TestLogitsDoNotDependOnTheChunk(t *testing.T) {
	m := loadStories(t)
	tokens := make([]int32, 300)
	for i := range tokens {
		tokens[i] = int32(3 + (i*7919)%500)
	}
	one := forwardLogits(t, m, tokens, 1)
	for _, chunk := range []int{7, 64, 128} {
		got := forwardLogits(t, m, tokens, chunk)
		for p := range one {
			for i := range one[p] {
				if math.Float32bits(one[p][i]) != math.Float32bits(got[p][i]) {
					t.Fatalf("chunks of %d: position %d, logit %d: %g, one token at a time %g", chunk, p, i, got[p][i], one[p][i])
				}
			}
		}
	}
}

// A sampled request resumed anywhere continues with the original's ids,
// on the bundled model (whose FFN width leaves scalar tails in SwiGLU).
func TestResumeSampledStories(t *testing.T) {
	m := loadStories(t)
	p := sample.Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, HasSeed: true, Seed: 42}
	run := func(resume []int32) []int32 {
		s, err := m.NewSession(1024)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Generate(context.Background(), Request{Prompt: "Once upon a time", MaxTokens: 300, Sampling: p, Resume: resume},
			func(Token) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return res.GeneratedIDs
	}
	orig := run(nil)
	for _, at := range []int{1, 50, 111, 200} {
		if got := run(orig[:at]); !slices.Equal(got, orig) {
			t.Errorf("resumed after %d tokens: %v, original %v", at, got, orig)
		}
	}
}

// A request that finishes in the very step an older one finds no KV block
// is the youngest, so it is the one preempted: it must still end, not wait
// to be admitted again, which a finished request never is (the queue
// behind it then waited for good). Of the lengths tried, one lands
// its last token in that step.
func TestRequestPreemptedAsItFinishesEnds(t *testing.T) {
	m := loadStories(t)
	preempted := 0
	for n := 1; n <= 16; n++ {
		e, err := m.NewEngine(EngineConfig{MaxSequences: 2, ContextLength: 128, KVTokens: 4 * kvBlockTokens})
		if err != nil {
			t.Fatal(err)
		}
		s, stop := startScheduler(e)
		ended := make(chan error, 2)
		started := make(chan struct{})
		var once sync.Once
		go func() {
			_, err := s.Generate(t.Context(), greedy(batchPrompts[3], 40), func(Token) error {
				once.Do(func() { close(started) })
				return nil
			})
			ended <- err
		}()
		<-started
		// Longer prompt, so it takes the pool's last block before the
		// older request needs it.
		go func() {
			_, err := s.Generate(t.Context(), greedy(batchPrompts[6], n), func(Token) error { return nil })
			ended <- err
		}()
		for range 2 {
			select {
			case err := <-ended:
				if err != nil {
					t.Fatalf("younger request of %d tokens: %v", n, err)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("younger request of %d tokens: the requests did not end (%d preemptions)", n, s.Preemptions())
			}
		}
		preempted += s.Preemptions()
		stop()
	}
	if preempted == 0 {
		t.Error("no request was preempted: the pool was not small enough to test that")
	}
}
