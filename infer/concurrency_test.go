package infer

import (
	"context"
	"slices"
	"sync"
	"testing"
)

// Sessions share the model and its thread pool but nothing else: running
// them at once gives what running them one by one gives.
func TestConcurrentSessionsMatchSerial(t *testing.T) {
	m := loadStories(t)
	prompts := []string{"Once upon a time", "The cat", "Lily and Ben went", "One day, a big dog"}
	run := func(prompt string) []int32 {
		s, err := m.NewSession(256)
		if err != nil {
			t.Error(err)
			return nil
		}
		res, err := s.Generate(context.Background(), Request{Prompt: prompt, MaxTokens: 48}, func(Token) error { return nil })
		if err != nil {
			t.Error(err)
		}
		return res.GeneratedIDs
	}
	serial := make([][]int32, len(prompts))
	for i, p := range prompts {
		serial[i] = run(p)
	}
	concurrent := make([][]int32, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Go(func() { concurrent[i] = run(p) })
	}
	wg.Wait()
	for i := range prompts {
		if len(serial[i]) != 48 || !slices.Equal(serial[i], concurrent[i]) {
			t.Errorf("%q: serial %v, concurrent %v", prompts[i], serial[i], concurrent[i])
		}
	}
}

// A caller that wants only the result passes no token callback.
func TestGenerateWithoutCallback(t *testing.T) {
	s, err := loadStories(t).NewSession(128)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Generate(context.Background(), Request{Prompt: "Once upon a time", MaxTokens: 4}, nil)
	if err != nil || len(res.GeneratedIDs) != 4 {
		t.Fatalf("generate without a callback: %d tokens, %v", len(res.GeneratedIDs), err)
	}
}
