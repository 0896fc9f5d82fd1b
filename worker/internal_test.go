package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
)

func TestSettle(t *testing.T) {
	engine := errors.New("engine broke")
	ctxErr := context.Canceled
	for _, tc := range []struct {
		name  string
		err   error
		cause error
		code  schemas.Code
		act   action
	}{
		{"success", nil, nil, "", actAck},
		{"success as shutdown began", nil, errShutdown, "", actAck},
		{"shutdown: another worker resumes", ctxErr, errShutdown, "", actNak},
		{"lease lost: another worker holds the job", ctxErr, errLeaseLost, "", actLeave},
		{"fenced by a newer delivery", ctxErr, errFenced, "", actLeave},
		{"an earlier delivery finished the job", ctxErr, errEnded, "", actAck},
		{"cancelled", ctxErr, errCancelled, schemas.CodeCancelled, actAck},
		{"deadline", ctxErr, errDeadline, schemas.CodeDeadlineExceeded, actAck},
		{"prompt too long", fmt.Errorf("x: %w", infer.ErrContextExceeded), nil, schemas.CodeContextExceeded, actAck},
		{"bad template", fmt.Errorf("x: %w", infer.ErrTemplate), nil, schemas.CodeTemplateError, actAck},
		{"KV pool too small", fmt.Errorf("x: %w", infer.ErrKVExhausted), nil, schemas.CodeNoCapacity, actAck},
		{"engine failure", engine, nil, schemas.CodeEngineFailure, actAck},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, act := settle(tc.err, tc.cause)
			if code != tc.code || act != tc.act {
				t.Errorf("settle = %q, %d; want %q, %d", code, act, tc.code, tc.act)
			}
		})
	}
}

func TestRequestMapsSampling(t *testing.T) {
	temp, seed := 0.0, int64(-7)
	req, err := request(schemas.Job{
		Messages:  []schemas.Message{{Role: "user", Content: "hi"}},
		MaxTokens: 5, Stop: []string{"\n"},
		Sampling: schemas.Sampling{Temperature: &temp, TopK: 40, TopP: 0.9, MinP: 0.05,
			RepeatPenalty: 1.1, PresencePenalty: 0.5, FrequencyPenalty: -0.5, Seed: &seed},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := req.Sampling
	if p.Temperature != 0 || p.TopK != 40 || p.TopP != 0.9 || p.MinP != 0.05 || p.RepeatPenalty != 1.1 ||
		p.PresencePenalty != 0.5 || p.FrequencyPenalty != -0.5 || !p.HasSeed || p.Seed != uint64(seed) {
		t.Errorf("sampling %+v", p)
	}
	if len(req.Messages) != 1 || req.Messages[0].Role != "user" || req.Messages[0].Content != "hi" ||
		req.MaxTokens != 5 || len(req.Stop) != 1 || req.Prompt != "" {
		t.Errorf("request %+v", req)
	}
	if p := params(schemas.Sampling{}); p.Temperature != 1 || p.HasSeed {
		t.Errorf("defaults %+v: want temperature 1 and no seed", p)
	}
}

func TestKeepLeaseStopsJobWhenRenewalsFail(t *testing.T) {
	_, nc, js, subj := bustest.Provisioned(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cons, err := bus.EnsureJobsConsumer(ctx, js, subj, "m", time.Minute, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subj.Jobs("m"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// With its consumer gone, nobody answers the job's renewals.
	if err := js.DeleteConsumer(ctx, subj.JobsStream(), subj.JobsConsumer("m")); err != nil {
		t.Fatal(err)
	}
	const ackWait = 300 * time.Millisecond
	w := &Worker{nc: nc, cfg: Config{AckWait: ackWait}}
	w.ackWait.Store(int64(ackWait))
	jobCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	start := time.Now()
	w.keepLease(jobCtx, slog.New(slog.DiscardHandler), msg, stop)
	if got := context.Cause(jobCtx); !errors.Is(got, errLeaseLost) {
		t.Fatalf("job context ended with %v, want %v", got, errLeaseLost)
	}
	if d := time.Since(start); d < ackWait {
		t.Errorf("lease declared lost after %v, before the ack wait of %v", d, ackWait)
	}
}

func TestKeepLeaseRenews(t *testing.T) {
	_, nc, js, subj := bustest.Provisioned(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	const ackWait = time.Second
	cons, err := bus.EnsureJobsConsumer(ctx, js, subj, "m", ackWait, -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, subj.Jobs("m"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	w := &Worker{nc: nc, cfg: Config{AckWait: ackWait}}
	w.ackWait.Store(int64(ackWait))
	leaseCtx, stopLease := context.WithCancel(ctx)
	jobCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.keepLease(leaseCtx, slog.New(slog.DiscardHandler), msg, stop)
	}()
	// While the lease is kept, a pull for the same job finds nothing, over
	// several lease periods.
	if again, err := cons.Next(jetstream.FetchMaxWait(5 * ackWait / 2)); !errors.Is(err, nats.ErrTimeout) {
		t.Errorf("second pull: %v, %v; want a timeout", again, err)
	}
	stopLease()
	<-done
	if err := context.Cause(jobCtx); err != nil {
		t.Errorf("job stopped: %v", err)
	}
}
