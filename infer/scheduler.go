package infer

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrStopped is returned for requests a scheduler can no longer run: it was
// stopped before they finished.
var ErrStopped = errors.New("scheduler stopped")

// Scheduler runs continuous batching on an engine: requests join the
// running batch between steps as soon as there is room for them in the
// batch and the KV pool, and leave it as soon as they finish, are
// cancelled, or their context ends. Each step gives every generating
// request its next token and spends what is left of the step's budget on
// chunks of new prompts, so a long prompt does not stall the others'
// streams. When a running request needs a KV block and none is free, the
// youngest request gives its blocks back and waits to be resumed; with
// batch-invariant kernels and position-seeded sampling it then continues
// exactly as it would have.
//
// Generate may be called from any number of goroutines; Run drives the
// engine on one.
type Scheduler struct {
	e    *Engine
	wake chan struct{}

	mu          sync.Mutex
	arrived     []*schedJob // submitted, not yet seen by Run
	stopped     bool
	inFlight    int // submitted and not finished
	preemptions int
	kvInUse     int // the engine's KV blocks in use after Run's last step
	kvCapacity  int

	// Run's own state.
	waiting []*schedJob // admission order: preempted requests first
	running []*schedJob
	batch   []*Sequence
}

type schedJob struct {
	ctx  context.Context
	seq  *Sequence
	done chan struct{}
	// after, for a choice forked from another (GenerateN), is the first
	// choice: this one joins the batch once that one has evaluated the
	// prompt, so it takes the prompt's KV blocks from the prefix cache.
	after *Sequence
}

// NewScheduler makes a scheduler for e. e must not be used otherwise while
// the scheduler runs.
func NewScheduler(e *Engine) *Scheduler {
	return &Scheduler{
		e: e, wake: make(chan struct{}, 1),
		running: make([]*schedJob, 0, e.cfg.MaxSequences),
		batch:   make([]*Sequence, 0, e.cfg.MaxSequences),
	}
}

// Engine returns the engine the scheduler drives.
func (s *Scheduler) Engine() *Engine { return s.e }

// InFlight is the number of requests submitted and not finished: running
// or waiting for room.
func (s *Scheduler) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// Preemptions counts the times a running request gave its KV blocks back
// to let another one grow.
func (s *Scheduler) Preemptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.preemptions
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Generate runs req as part of the scheduler's batch and returns when it
// has finished. emit is called on the scheduler's goroutine for each token;
// it must not block for long, since the whole batch waits for it. When ctx
// ends, the request leaves the batch at the next step boundary and
// Generate returns the partial result with context.Cause(ctx).
func (s *Scheduler) Generate(ctx context.Context, req Request, emit func(Token) error) (Result, error) {
	seq, err := s.e.NewSequence(req, emit)
	if err != nil {
		return Result{}, err
	}
	j := &schedJob{ctx: ctx, seq: seq, done: make(chan struct{})}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return Result{PromptIDs: seq.res.PromptIDs}, ErrStopped
	}
	s.arrived = append(s.arrived, j)
	s.inFlight++
	s.mu.Unlock()
	stopWaking := context.AfterFunc(ctx, s.signal)
	defer stopWaking()
	s.signal()
	<-j.done
	return seq.Result()
}

// GenerateN runs several choices of one prompt (reqs differ only in their
// sampling, say their seeds, and in what each resumes from) and returns
// when all have finished, with their results in order. The first choice
// evaluates the prompt; the others join the batch after it, share its KV
// blocks through the prefix cache (only the prompt's last, partly filled
// block is copied) and decode with it in the same steps. emit gets the
// choice's index with each token. The error is the first choice's that
// failed.
func (s *Scheduler) GenerateN(ctx context.Context, reqs []Request, emit func(int, Token) error) ([]Result, error) {
	jobs := make([]*schedJob, len(reqs))
	for i, req := range reqs {
		seq, err := s.e.NewSequence(req, func(t Token) error { return emit(i, t) })
		if err != nil {
			return nil, err
		}
		jobs[i] = &schedJob{ctx: ctx, seq: seq, done: make(chan struct{})}
		if i > 0 {
			jobs[i].after = jobs[0].seq
		}
	}
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil, ErrStopped
	}
	s.arrived = append(s.arrived, jobs...)
	s.inFlight += len(jobs)
	s.mu.Unlock()
	stopWaking := context.AfterFunc(ctx, s.signal)
	defer stopWaking()
	s.signal()
	results := make([]Result, len(jobs))
	var first error
	for i, j := range jobs {
		<-j.done
		var err error
		results[i], err = j.seq.Result()
		if err != nil && first == nil {
			first = err
		}
	}
	return results, first
}

// Run steps the engine until ctx is done, then fails the requests still in
// it with ErrStopped and returns. Call it once.
func (s *Scheduler) Run(ctx context.Context) {
	defer s.stop()
	for {
		s.mu.Lock()
		s.waiting = append(s.waiting, s.arrived...)
		clear(s.arrived)
		s.arrived = s.arrived[:0]
		s.mu.Unlock()

		s.retire()
		s.admit()
		if len(s.running) == 0 {
			s.noteKV()
			s.e.Rest()
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			}
			continue
		}
		if ctx.Err() != nil {
			return
		}
		s.batch = s.batch[:0]
		for _, j := range s.running {
			s.batch = append(s.batch, j.seq)
		}
		s.e.Step(s.batch)
		s.relieve()
		s.noteKV()
	}
}

// noteKV copies the pool's use where KVBlocks reads it: only Run may
// touch the engine.
func (s *Scheduler) noteKV() {
	inUse, _, capacity := s.e.KVStats()
	s.mu.Lock()
	s.kvInUse, s.kvCapacity = inUse, capacity
	s.mu.Unlock()
}

// KVBlocks is the engine's KV blocks in use and the pool's size, as of
// Run's last step (0, 0 before it ran); each block holds 16 positions.
func (s *Scheduler) KVBlocks() (inUse, capacity int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kvInUse, s.kvCapacity
}

// retire ends requests whose context is done and takes finished ones out.
func (s *Scheduler) retire() {
	keep := s.running[:0]
	for _, j := range s.running {
		if err := j.ctx.Err(); err != nil {
			j.seq.Cancel(context.Cause(j.ctx))
		}
		if j.seq.Done() {
			s.e.Release(j.seq)
			s.finish(j)
			continue
		}
		keep = append(keep, j)
	}
	clear(s.running[len(keep):])
	s.running = keep
	waiting := s.waiting[:0]
	for _, j := range s.waiting {
		if err := j.ctx.Err(); err != nil {
			j.seq.Cancel(context.Cause(j.ctx))
		}
		// Preempted in the step that finished it: its blocks are back
		// already. Left waiting, it would never be admitted again, and
		// the queue behind it would wait for good.
		if j.seq.Done() {
			s.finish(j)
			continue
		}
		waiting = append(waiting, j)
	}
	clear(s.waiting[len(waiting):])
	s.waiting = waiting
}

// admit moves waiting requests into the batch, in order, while the batch
// and the KV pool have room.
// A forked choice waits, without holding others up, until its first
// choice has evaluated the prompt.
func (s *Scheduler) admit() {
	keep := s.waiting[:0]
	full := false
	for _, j := range s.waiting {
		if full || len(s.running) >= s.e.cfg.MaxSequences || (j.after != nil && !j.after.evaluated()) {
			keep = append(keep, j)
			continue
		}
		ok, err := s.e.Admit(j.seq)
		switch {
		case err != nil:
			s.finish(j)
		case !ok:
			full = true
			keep = append(keep, j)
		default:
			s.running = append(s.running, j)
		}
	}
	clear(s.waiting[len(keep):])
	s.waiting = keep
}

// relieve makes room for starved requests: the youngest running request
// gives its blocks back and waits at the head of the queue. A request that
// is starved alone has the whole pool and cannot grow further.
func (s *Scheduler) relieve() {
	for {
		starved := -1
		for i, j := range s.running {
			if j.seq.Starved() {
				starved = i
				break
			}
		}
		if starved < 0 {
			return
		}
		if len(s.running) == 1 {
			seq := s.running[0].seq
			seq.Cancel(fmt.Errorf("%w: the sequence has %d tokens and the pool holds %d",
				ErrKVExhausted, len(seq.tokens), s.e.kv.capacity()*kvBlockTokens))
			return
		}
		last := len(s.running) - 1
		victim := s.running[last]
		s.running[last] = nil
		s.running = s.running[:last]
		s.e.Preempt(victim.seq)
		s.mu.Lock()
		s.preemptions++
		s.mu.Unlock()
		s.waiting = append(s.waiting, nil)
		copy(s.waiting[1:], s.waiting)
		s.waiting[0] = victim
		if starved != last {
			// The freed blocks go to the starved request at the next step.
			s.running[starved].seq.starved = false
		}
	}
}

func (s *Scheduler) finish(j *schedJob) {
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
	close(j.done)
}

// stop fails everything still in the scheduler.
func (s *Scheduler) stop() {
	s.mu.Lock()
	s.stopped = true
	s.waiting = append(s.waiting, s.arrived...)
	s.arrived = nil
	s.mu.Unlock()
	for _, j := range s.running {
		j.seq.Cancel(ErrStopped)
		s.e.Release(j.seq)
		s.finish(j)
	}
	for _, j := range s.waiting {
		j.seq.Cancel(ErrStopped)
		s.finish(j)
	}
	s.running, s.waiting = nil, nil
}
