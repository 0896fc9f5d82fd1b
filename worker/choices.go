package worker

import (
	"context"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
)

// generate runs a job's choices on the scheduler: one, or job.N of one
// prompt, choice i sampling with the job's seed plus i and resuming from
// the tokens its events already hold. emit gets each token with its
// choice. The first result is the first choice's, and is there (empty)
// even when the job failed before any token.
func (w *Worker) generate(ctx context.Context, job schemas.Job, req infer.Request, state resumeState, emit func(int, infer.Token)) ([]infer.Result, error) {
	req.Resume = state.tokens
	if job.N <= 1 {
		res, err := w.sched.Generate(ctx, req, func(t infer.Token) error {
			emit(0, t)
			return nil
		})
		return []infer.Result{res}, err
	}
	reqs := make([]infer.Request, job.N)
	for i := range reqs {
		reqs[i] = req
		if i > 0 {
			// A job without a seed has one from the queen; on the bus one
			// may come without, and each choice then draws its own.
			reqs[i].Sampling.Seed += uint64(i)
			reqs[i].Resume = nil
			if i-1 < len(state.more) {
				reqs[i].Resume = state.more[i-1]
			}
		}
	}
	results, err := w.sched.GenerateN(ctx, reqs, func(i int, t infer.Token) error {
		emit(i, t)
		return nil
	})
	if len(results) == 0 {
		results = []infer.Result{{}}
	}
	return results, err
}

// endOf is the end event of a job's choices: the prompt counted once,
// every choice's tokens, each choice's stop reason when there are several.
func endOf(results []infer.Result) schemas.Event {
	usage := &schemas.Usage{PromptTokens: len(results[0].PromptIDs)}
	ev := schemas.Event{Type: schemas.EventEnd, StopReason: results[0].StopReason, Usage: usage}
	for _, r := range results {
		usage.CompletionTokens += len(r.GeneratedIDs)
		if len(results) > 1 {
			ev.StopReasons = append(ev.StopReasons, r.StopReason)
		}
	}
	usage.TotalTokens = usage.PromptTokens + usage.CompletionTokens
	return ev
}
