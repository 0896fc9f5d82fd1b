package infer

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/infer/sample"
)

const storiesPath = "testdata/stories260K.gguf"

type reference struct {
	Prompt       string  `json:"prompt"`
	PromptIDs    []int32 `json:"prompt_ids"`
	GeneratedIDs []int32 `json:"generated_ids"`
	Text         string  `json:"completion_text"`
}

func loadReference(t *testing.T, name string) reference {
	t.Helper()
	data, err := os.ReadFile("testdata/reference/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

func loadStories(t testing.TB) *Model {
	t.Helper()
	return loadStoriesWith(t, Options{Threads: 2})
}

func loadStoriesWith(t testing.TB, opts Options) *Model {
	t.Helper()
	m, err := Load(storiesPath, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestStoriesGreedyReference(t *testing.T) {
	m := loadStories(t)
	for _, c := range []struct {
		file     string
		ctx, max int
	}{
		{"stories260K-once-upon-a-time-64.json", 128, 64},
		{"stories260K-empty-prompt-256.json", 512, 256},
	} {
		t.Run(c.file, func(t *testing.T) {
			ref := loadReference(t, c.file)
			s, err := m.NewSession(c.ctx)
			if err != nil {
				t.Fatal(err)
			}
			var streamed strings.Builder
			res, err := s.Generate(context.Background(), Request{Prompt: ref.Prompt, MaxTokens: c.max},
				func(tok Token) error { streamed.WriteString(tok.Text); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.PromptIDs, ref.PromptIDs) {
				t.Errorf("prompt ids %v, want %v", res.PromptIDs, ref.PromptIDs)
			}
			if !slices.Equal(res.GeneratedIDs, ref.GeneratedIDs) {
				t.Errorf("generated ids\n got %v\nwant %v", res.GeneratedIDs, ref.GeneratedIDs)
			}
			if ref.Text != "" && res.Text != ref.Text {
				t.Errorf("text\n got %q\nwant %q", res.Text, ref.Text)
			}
			if streamed.String() != res.Text {
				t.Errorf("streamed text %q differs from result %q", streamed.String(), res.Text)
			}
			if res.StopReason != StopLength || res.Timings.GeneratedTokens != c.max {
				t.Errorf("stop %q after %d tokens", res.StopReason, res.Timings.GeneratedTokens)
			}
		})
	}
}

func readLogits(t *testing.T) [][]float32 {
	t.Helper()
	fh, err := os.Open("testdata/reference/stories260K-logits-first3.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var steps [][]float32
	sc := bufio.NewScanner(fh)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		_, values, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var row []float32
		for _, f := range strings.Fields(values) {
			v, err := strconv.ParseFloat(f, 32)
			if err != nil {
				t.Fatal(err)
			}
			row = append(row, float32(v))
		}
		steps = append(steps, row)
	}
	return steps
}

func TestStoriesLogitsReference(t *testing.T) {
	m := loadStories(t)
	ref := loadReference(t, "stories260K-once-upon-a-time-64.json")
	want := readLogits(t)
	if len(want) != 3 {
		t.Fatalf("%d logit rows in the reference, want 3", len(want))
	}
	tokens := append(append([]int32(nil), ref.PromptIDs...), ref.GeneratedIDs[:len(want)-1]...)
	got := forwardLogits(t, m, tokens, len(ref.PromptIDs))[len(ref.PromptIDs)-1:]
	for step, row := range want {
		if len(row) != len(got[step]) {
			t.Fatalf("step %d: %d reference logits, model has %d", step, len(row), len(got[step]))
		}
		worst := 0.0
		for i := range row {
			worst = max(worst, math.Abs(float64(row[i]-got[step][i])))
		}
		t.Logf("step %d: largest logit difference %.2g", step, worst)
		if worst > 1e-3 {
			t.Errorf("step %d: logits differ by up to %g, want <= 1e-3", step, worst)
		}
	}
}

func TestSessionReusesPrefixAndStops(t *testing.T) {
	m := loadStories(t)
	s, err := m.NewSession(128)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := s.Generate(ctx, Request{Prompt: "Once upon a time", MaxTokens: 8}, func(Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Generate(ctx, Request{Prompt: "Once upon a time", MaxTokens: 8}, func(Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if again.Timings.PromptTokens != 1 || !slices.Equal(first.GeneratedIDs, again.GeneratedIDs) {
		t.Errorf("second run evaluated %d prompt tokens (want 1, the rest cached) and gave %v, first %v",
			again.Timings.PromptTokens, again.GeneratedIDs, first.GeneratedIDs)
	}
	stopped, err := s.Generate(ctx, Request{Prompt: "Once upon a time", MaxTokens: 64, Stop: []string{"Lily"}}, func(Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if stopped.StopReason != StopEOG || stopped.Text != ", there was a little girl named " {
		t.Errorf("stop string: reason %q text %q", stopped.StopReason, stopped.Text)
	}
}

func TestGenerateHonoursCancelAndContext(t *testing.T) {
	m := loadStories(t)
	s, err := m.NewSession(16)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Generate(context.Background(), Request{Prompt: "Once upon a time", MaxTokens: 100}, func(Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if res.StopReason != StopLength || len(res.PromptIDs)+len(res.GeneratedIDs) != 16+1 {
		t.Errorf("full context: reason %q, %d prompt + %d generated", res.StopReason, len(res.PromptIDs), len(res.GeneratedIDs))
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err = s.Generate(ctx, Request{Prompt: "Once", MaxTokens: 10}, func(Token) error {
		n++
		cancel()
		return nil
	})
	if err != context.Canceled || n != 1 {
		t.Errorf("cancelled generation: err %v after %d tokens, want context.Canceled after 1", err, n)
	}
	long := strings.Repeat("Once upon a time ", 10)
	if _, err := s.Generate(context.Background(), Request{Prompt: long}, func(Token) error { return nil }); err == nil {
		t.Error("a prompt longer than the context was accepted")
	}
}

func TestSeededSamplingRepeats(t *testing.T) {
	m := loadStories(t)
	run := func(seed uint64) []int32 {
		s, err := m.NewSession(128)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Generate(context.Background(), Request{
			Prompt: "Once upon a time", MaxTokens: 32,
			Sampling: sample.Params{Temperature: 1, Seed: seed, HasSeed: true},
		}, func(Token) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return res.GeneratedIDs
	}
	a, b, c := run(42), run(42), run(7)
	if !slices.Equal(a, b) {
		t.Errorf("same seed gave %v and %v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 42 and 7 gave the same %d tokens", len(a))
	}
}
