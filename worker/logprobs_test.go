package worker_test

import (
	"math"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

// Jobs with logprobs and logit_bias straight off the queue: every token
// event carries its logprob and the alternatives asked for, a bias that
// forces a token makes every token that one, and a bias for a token
// outside the vocabulary is invalid_request.
func TestJobsWithLogprobsAndLogitBias(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{ContextLength: 256})
	n := 3
	job := schemas.Job{ID: "job-logprobs", Prompt: "Once upon a time", MaxTokens: 6, Sampling: greedy()}
	job.Logprobs = &n
	events := drain(t, b.submit(t, job))
	wantEnd(t, events)
	for _, ev := range events[:len(events)-1] {
		lp := ev.Logprobs
		if lp == nil || len(lp.Top) != n || lp.Logprob > 0 || math.IsNaN(lp.Logprob) {
			t.Fatalf("token event %+v: want a logprob and %d alternatives", ev, n)
		}
		if lp.Top[0].TokenID != *ev.TokenID || lp.Top[0].Logprob != lp.Logprob {
			t.Errorf("a greedy token %d is not its step's best alternative %+v", *ev.TokenID, lp.Top[0])
		}
	}

	biased := schemas.Job{ID: "job-bias", Prompt: "Once upon a time", MaxTokens: 4, Sampling: greedy()}
	const forced = 300
	biased.LogitBias = map[int32]float64{forced: 100}
	events = drain(t, b.submit(t, biased))
	wantEnd(t, events)
	for _, ev := range events[:len(events)-1] {
		if ev.TokenID != nil && *ev.TokenID != forced {
			t.Errorf("token %d with token %d biased by 100", *ev.TokenID, forced)
		}
	}

	outside := biased
	outside.ID = "job-bias-outside"
	outside.LogitBias = map[int32]float64{1 << 30: 1}
	events = drain(t, b.submit(t, outside))
	wantError(t, events, schemas.CodeInvalidRequest)
	if !strings.Contains(events[len(events)-1].Error.Message, "logit_bias") {
		t.Errorf("error %+v does not name logit_bias", events[len(events)-1].Error)
	}
	b.waitQueueEmpty(t)
}
