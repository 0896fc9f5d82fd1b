package worker_test

import (
	"slices"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

// A job with n 3 off the queue: three choices' tokens, told apart by
// index, each what a one-choice job with that choice's seed gives; the end
// event counts the prompt once and every choice's tokens, with each
// choice's stop reason.
func TestJobWithChoices(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{ContextLength: 256, Slots: 4})
	one, seed := 1.0, int64(11)
	job := schemas.Job{ID: "job-n3", Prompt: "Once upon a time", MaxTokens: 12,
		Sampling: schemas.Sampling{Temperature: &one, Seed: &seed, N: 3}}
	events := drain(t, b.submit(t, job))
	end := wantEnd(t, events)
	choices := make([][]int32, 3)
	for _, ev := range events[:len(events)-1] {
		if ev.Index < 0 || ev.Index >= 3 {
			t.Fatalf("event %+v: index out of range", ev)
		}
		if *ev.TokenID >= 0 {
			choices[ev.Index] = append(choices[ev.Index], *ev.TokenID)
		}
	}
	completion := 0
	for i, c := range choices {
		completion += len(c)
		s := seed + int64(i)
		alone := schemas.Job{ID: "job-alone-" + string(rune('a'+i)), Prompt: job.Prompt, MaxTokens: job.MaxTokens,
			Sampling: schemas.Sampling{Temperature: &one, Seed: &s}}
		var want []int32
		for _, ev := range drain(t, b.submit(t, alone)) {
			if ev.Type == schemas.EventToken && *ev.TokenID >= 0 {
				want = append(want, *ev.TokenID)
			}
		}
		if !slices.Equal(c, want) {
			t.Errorf("choice %d: %v, alone with seed %d: %v", i, c, s, want)
		}
	}
	if slices.Equal(choices[0], choices[1]) && slices.Equal(choices[1], choices[2]) {
		t.Errorf("three choices alike: %v", choices[0])
	}
	if len(end.StopReasons) != 3 || end.Usage.CompletionTokens != completion || end.Usage.PromptTokens == 0 ||
		end.Usage.TotalTokens != end.Usage.PromptTokens+completion {
		t.Errorf("end %+v usage %+v: want 3 stop reasons and %d completion tokens", end, end.Usage, completion)
	}
	b.waitQueueEmpty(t)
}

// A job with n 3 stopped mid-stream and taken over: the next worker
// resumes every choice from its own tokens, and each choice ends as the
// uninterrupted one-choice run with its seed.
func TestChoicesResumeOnAnotherWorker(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{ContextLength: longContext, Slots: 4, ShutdownGrace: time.Millisecond})
	one, seed := 1.0, int64(21)
	// Long enough to outlast the stop and its millisecond of grace.
	const n = 200
	job := schemas.Job{ID: "job-n3-resume", Prompt: "Once upon a time", MaxTokens: n,
		Sampling: schemas.Sampling{Temperature: &one, Seed: &seed, N: 3}}
	sub := b.submit(t, job)
	first := firstToken(t, sub)
	r.wait(t)
	b.startWorker(t, worker.Config{ID: "w2", ContextLength: longContext, Slots: 4})
	events := drain(t, sub, first)
	end := wantEnd(t, events)
	if end.WorkerID != "w2" || end.Delivery != 2 {
		t.Errorf("end %+v, want it from w2's delivery 2", end)
	}
	choices := make([][]int32, 3)
	for _, ev := range events[:len(events)-1] {
		if *ev.TokenID >= 0 {
			choices[ev.Index] = append(choices[ev.Index], *ev.TokenID)
		}
	}
	for i, c := range choices {
		s := seed + int64(i)
		alone := schemas.Job{ID: "job-n3-alone-" + string(rune('a'+i)), Prompt: job.Prompt, MaxTokens: n,
			Sampling: schemas.Sampling{Temperature: &one, Seed: &s}}
		var want []int32
		for _, ev := range drain(t, b.submit(t, alone)) {
			if ev.Type == schemas.EventToken && *ev.TokenID >= 0 {
				want = append(want, *ev.TokenID)
			}
		}
		if !slices.Equal(c, want) {
			t.Errorf("choice %d after the takeover: %d tokens, alone %d; they differ", i, len(c), len(want))
		}
	}
	b.waitQueueEmpty(t)
}
