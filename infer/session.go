package infer

import (
	"context"
	"errors"
	"fmt"
)

// ErrContextExceeded is returned when a prompt does not fit the context.
var ErrContextExceeded = errors.New("context length exceeded")

// Session is an engine for one sequence at a time: the thin wrapper behind
// rbee generate. Its KV pool holds one context, and what a generation
// leaves there stays cached, so the next prompt that repeats its beginning
// evaluates only the rest. A session is used by one goroutine at a time;
// sessions of one model may run at once.
type Session struct {
	e    *Engine
	seqs [1]*Sequence
}

// NewSession makes a session with room for ctxLen tokens (0: the length the
// model was trained for). ctxLen may exceed that length; quality past it is
// not promised.
func (m *Model) NewSession(ctxLen int) (*Session, error) {
	e, err := m.NewEngine(EngineConfig{MaxSequences: 1, ContextLength: ctxLen})
	if err != nil {
		return nil, err
	}
	return &Session{e: e}, nil
}

// ContextLength is the number of tokens the session can hold.
func (s *Session) ContextLength() int { return s.e.cfg.ContextLength }

// Reset forgets the cached tokens.
func (s *Session) Reset() { s.e.kv = newKVCache(s.e.kv.capacity()) }

// Generate runs req, calling emit for each sampled token. It stops at an
// end-of-generation token, a stop string, MaxTokens, a full context, an
// error from emit, or when ctx is done (then it returns ctx.Err() with the
// partial result).
func (s *Session) Generate(ctx context.Context, req Request, emit func(Token) error) (Result, error) {
	seq, err := s.e.NewSequence(req, emit)
	if err != nil {
		return Result{}, err
	}
	defer s.e.Release(seq)
	if ok, _ := s.e.Admit(seq); !ok {
		seq.Cancel(fmt.Errorf("%w: no room for the prompt", ErrKVExhausted))
		return seq.Result()
	}
	s.seqs[0] = seq
	defer func() { s.seqs[0] = nil }()
	for !seq.Done() {
		if err := ctx.Err(); err != nil {
			seq.Cancel(err)
			break
		}
		s.e.Step(s.seqs[:])
		if seq.Starved() {
			seq.Cancel(fmt.Errorf("%w: the session's context is full", ErrKVExhausted))
		}
	}
	return seq.Result()
}
