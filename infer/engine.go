package infer

import (
	"fmt"
	"slices"
	"time"

	"github.com/rbee-dev/rbee/infer/grammar"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/infer/tokenizer"
)

// DefaultStepTokens bounds the tokens one step evaluates. Prompt chunks
// reuse each weight block for many tokens, so larger steps evaluate prompts
// faster, but every running sequence waits for the whole step: this keeps a
// step with a prompt chunk in it to about the time of a few decode steps
// on small models.
const DefaultStepTokens = 128

// EngineConfig sizes an engine.
type EngineConfig struct {
	// MaxSequences is the most sequences one step advances (default 1).
	MaxSequences int
	// ContextLength bounds each sequence: prompt plus output (default: the
	// length the model was trained for).
	ContextLength int
	// KVTokens sizes the KV pool shared by the engine's sequences, in
	// positions (default MaxSequences*ContextLength). Sequences take it in
	// blocks of 16 positions as they grow.
	KVTokens int
	// StepTokens bounds the tokens one step evaluates: one for each
	// sequence generating, and chunks of prompts (default DefaultStepTokens,
	// at least MaxSequences).
	StepTokens int
}

// Engine advances a batch of sequences through a model, one step at a
// time, with every weight block read once per step for the whole batch.
// Each sequence's keys and values live in blocks of the engine's KV pool;
// blocks a finished sequence leaves behind stay cached, so a later prompt
// with the same prefix takes them instead of evaluating it again. An
// Engine is driven by one goroutine at a time.
type Engine struct {
	m      *Model
	cfg    EngineConfig
	b      *cpuBackend
	kv     *kvCache
	act    activations
	layout stepLayout
	inStep []*Sequence // sequences of the current step
	chunk  []int       // tokens each of them evaluates
}

// NewEngine makes an engine and all its memory: scratch for the largest
// step, and the KV pool (mapped lazily by the operating system, so resident
// memory grows with the blocks in use).
func (m *Model) NewEngine(cfg EngineConfig) (*Engine, error) {
	hp := m.hp
	if cfg.MaxSequences == 0 {
		cfg.MaxSequences = 1
	}
	if cfg.ContextLength == 0 {
		cfg.ContextLength = hp.ContextLength
	}
	if cfg.KVTokens == 0 {
		cfg.KVTokens = cfg.MaxSequences * cfg.ContextLength
	}
	if cfg.StepTokens == 0 {
		cfg.StepTokens = DefaultStepTokens
	}
	cfg.StepTokens = max(cfg.StepTokens, cfg.MaxSequences)
	switch {
	case cfg.MaxSequences < 1 || cfg.MaxSequences > 1<<12:
		return nil, fmt.Errorf("engine: max sequences %d: want 1 to %d", cfg.MaxSequences, 1<<12)
	case cfg.ContextLength < 1 || cfg.ContextLength > 1<<20:
		return nil, fmt.Errorf("engine: context %d: want 1 to %d tokens", cfg.ContextLength, 1<<20)
	case cfg.KVTokens < 1 || cfg.KVTokens > 1<<26:
		return nil, fmt.Errorf("engine: KV pool of %d tokens: want 1 to %d", cfg.KVTokens, 1<<26)
	case cfg.StepTokens > 1<<16:
		return nil, fmt.Errorf("engine: step of %d tokens: want at most %d", cfg.StepTokens, 1<<16)
	}
	if cfg.ContextLength > hp.ContextLength {
		m.log.Warn("context is longer than the model was trained for", "context", cfg.ContextLength, "trained", hp.ContextLength)
	}
	blocks := (cfg.KVTokens + kvBlockTokens - 1) / kvBlockTokens
	b := newCPUBackend(m, blocks, cfg.ContextLength)
	e := &Engine{
		m: m, cfg: cfg, b: b, kv: newKVCache(blocks),
		act:    newActivations(b, hp, cfg.StepTokens, cfg.MaxSequences),
		inStep: make([]*Sequence, 0, cfg.MaxSequences),
		chunk:  make([]int, 0, cfg.MaxSequences),
	}
	l := &e.layout
	l.tokens = make([]int32, 0, cfg.StepTokens)
	l.positions = make([]int32, 0, cfg.StepTokens)
	l.slots = make([]int32, 0, cfg.StepTokens)
	l.seqOf = make([]int32, 0, cfg.StepTokens)
	l.blocks = make([][]int32, 0, cfg.MaxSequences)
	l.logitRows = make([]int32, 0, cfg.MaxSequences)
	return e, nil
}

// Rest tells the engine it has nothing to run for now: its threads sleep
// instead of polling for the next step. The next Step wakes them.
func (e *Engine) Rest() {
	if e.m.pool != nil {
		e.m.pool.rest()
	}
}

// Config returns the engine's configuration with its defaults filled in.
func (e *Engine) Config() EngineConfig { return e.cfg }

// KVStats reports the pool: blocks in use by sequences, the most ever in use
// at once, and the pool's size; each block holds 16 positions.
func (e *Engine) KVStats() (inUse, peak, total int) {
	return e.kv.inUse, e.kv.maxInUse, e.kv.capacity()
}

// Sequence is one request on an engine: its tokens, its place in the KV
// pool, its sampler, stop matcher and streaming detokenizer.
type Sequence struct {
	e          *Engine
	emit       func(Token) error
	tokens     []int32 // the prompt, then every generated token
	nPrompt    int
	maxTokens  int
	logitSteps int
	logprobs   int // alternatives to report; -1: no logprobs
	top        []sample.Candidate
	kv         kvSeq
	admitted   bool
	starved    bool
	done       bool
	err        error

	sampler *sample.Sampler
	grammar *grammar.Matcher // nil when unconstrained
	decoder *tokenizer.StreamDecoder
	stops   *sample.StopMatcher
	logits  []float32
	text    []byte
	res     Result

	stoppedByString bool
	start, firstAt  time.Time
}

// NewSequence tokenizes req and prepares its sampling. emit (nil: none) is called, on
// the goroutine that drives the engine, for each token as it is sampled.
// Request.Resume continues an earlier run of the same request: those
// tokens are taken as already generated (not emitted again), and sampling
// goes on from the next position exactly as the earlier run would have,
// when it had the same seed.
func (e *Engine) NewSequence(req Request, emit func(Token) error) (*Sequence, error) {
	m := e.m
	prompt := req.Prompt
	if len(req.Messages) > 0 {
		rendered, err := m.RenderChatTools(req.Messages, req.Tools)
		if err != nil {
			return nil, err
		}
		prompt = rendered + req.AnswerPrefix
	}
	ids, err := m.tokenize(prompt, len(req.Messages) > 0)
	if err != nil {
		return nil, err
	}
	if len(ids) >= e.cfg.ContextLength {
		return nil, fmt.Errorf("%w: the prompt has %d tokens, the context holds %d", ErrContextExceeded, len(ids), e.cfg.ContextLength)
	}
	if len(ids)+len(req.Resume) > e.cfg.ContextLength {
		return nil, fmt.Errorf("%w: the prompt and the %d tokens to resume from exceed the context of %d",
			ErrContextExceeded, len(req.Resume), e.cfg.ContextLength)
	}
	for _, id := range req.Resume {
		if id < 0 || int(id) >= m.hp.VocabSize {
			return nil, fmt.Errorf("resume: token %d is outside the vocabulary of %d", id, m.hp.VocabSize)
		}
	}
	sampler, err := sample.New(req.Sampling, m.hp.VocabSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSampling, err)
	}
	maxTokens := req.MaxTokens
	if maxTokens <= 0 {
		maxTokens = e.cfg.ContextLength
	}
	if emit == nil {
		// A caller that wants only the Result.
		emit = func(Token) error { return nil }
	}
	s := &Sequence{
		e: e, emit: emit, nPrompt: len(ids), maxTokens: maxTokens, logitSteps: req.LogitSteps,
		tokens: make([]int32, 0, e.cfg.ContextLength+1),
		kv: kvSeq{
			blocks:   make([]int32, 0, blocksFor(e.cfg.ContextLength+1)),
			contents: make([]uint64, 0, blocksFor(e.cfg.ContextLength+1)),
		},
		logprobs: -1,
		sampler:  sampler, decoder: m.tok.NewStreamDecoder(), stops: sample.NewStopMatcher(req.Stop),
		logits: make([]float32, m.hp.VocabSize),
		text:   make([]byte, 0, 8*min(maxTokens, e.cfg.ContextLength)),
		start:  time.Now(),
	}
	if req.Logprobs {
		s.logprobs = min(max(req.TopLogprobs, 0), sample.MaxTopLogprobs)
	}
	s.res.PromptIDs = ids
	s.tokens = append(s.tokens, ids...)
	for _, id := range ids {
		sampler.Accept(id)
	}
	if prompt == "" {
		s.decoder.StartOfText()
	}
	if req.Grammar != nil {
		s.grammar = m.checker(req.Grammar).NewMatcher()
	}
	for _, id := range req.Resume {
		if s.grammar != nil {
			if err := s.grammar.Accept(id); err != nil {
				return nil, fmt.Errorf("resume: %w", err)
			}
		}
		sampler.Accept(id)
		s.tokens = append(s.tokens, id)
		piece, _ := s.stops.Push(s.decoder.Add(id))
		s.text = append(s.text, piece...)
	}
	sampler.Resume(len(req.Resume))
	return s, nil
}

// evaluated reports whether the sequence's prompt is in its KV blocks (it
// has sampled), or it has ended: a choice forked from it may start.
func (s *Sequence) evaluated() bool { return !s.firstAt.IsZero() || s.done }

// Done reports whether the sequence has finished; Result tells how.
func (s *Sequence) Done() bool { return s.done }

// Starved reports whether the last step could not give the sequence a KV
// block for its next token. The caller makes room (Preempt another
// sequence, or Cancel this one) before the next step.
func (s *Sequence) Starved() bool { return s.starved }

// Admitted reports whether the sequence holds its place in the KV pool.
func (s *Sequence) Admitted() bool { return s.admitted }

// Result returns what the sequence produced so far, and the error it ended
// with, if any.
func (s *Sequence) Result() (Result, error) {
	res := s.res
	res.GeneratedIDs = slices.Clone(s.tokens[s.nPrompt:])
	res.Text = string(s.text)
	res.Timings.GeneratedTokens = len(res.GeneratedIDs)
	return res, s.err
}

// Cancel ends the sequence with err; it stays admitted until Release.
func (s *Sequence) Cancel(err error) {
	if !s.done {
		s.done, s.err = true, err
	}
}

// blocksFor is the number of KV blocks n positions take.
func blocksFor(n int) int { return (n + kvBlockTokens - 1) / kvBlockTokens }

// Admit gives the sequence its place in the KV pool: the cached blocks that
// hold a prefix of its tokens, and new blocks for the rest of its prompt.
// It returns false, taking nothing, when the pool has no room for it now;
// it fails the sequence with ErrKVExhausted when it could never fit.
func (e *Engine) Admit(s *Sequence) (bool, error) {
	if s.admitted || s.done {
		return s.admitted, s.err
	}
	if need := blocksFor(len(s.tokens) + 1); need > e.kv.capacity() {
		s.Cancel(fmt.Errorf("%w: the sequence needs %d positions, the pool holds %d",
			ErrKVExhausted, len(s.tokens)+1, e.kv.capacity()*kvBlockTokens))
		return false, s.err
	}
	src, dst := e.kv.reusePrefix(&s.kv, s.tokens)
	if dst >= 0 {
		e.b.copyKVBlock(dst, src)
		e.kv.release(src)
	}
	if !e.kv.reserve(&s.kv, len(s.tokens)) {
		e.kv.releaseSeq(&s.kv, s.tokens)
		return false, nil
	}
	if s.res.Timings.PromptTokens == 0 {
		s.res.Timings.PromptTokens = len(s.tokens) - s.kv.len
	}
	s.admitted, s.starved = true, false
	return true, nil
}

// Preempt takes the sequence's KV blocks back, keeping everything else: a
// later Admit resumes it where it was, from the cache where the blocks are
// still there and by evaluating its tokens again where not, with the same
// results either way.
func (e *Engine) Preempt(s *Sequence) {
	if s.admitted {
		e.kv.releaseSeq(&s.kv, s.tokens)
		s.admitted, s.starved = false, false
	}
}

// Release gives the sequence's blocks back to the pool, where they stay
// cached for later prompts with the same prefix.
func (e *Engine) Release(s *Sequence) { e.Preempt(s) }

// pending is the number of tokens whose keys and values are not stored yet.
func (s *Sequence) pending() int { return len(s.tokens) - s.kv.len }

func (s *Sequence) runnable() bool { return s.admitted && !s.done }

// Step advances each admitted, unfinished sequence of seqs by one step:
// a generating sequence evaluates its last token and samples the next one;
// one still reading its prompt evaluates the next chunk of it, within the
// step's token budget after every generating sequence has had its token.
// Tokens are emitted as they are sampled. A sequence whose next token finds
// no free KV block is skipped and reported by Starved.
func (e *Engine) Step(seqs []*Sequence) {
	l := &e.layout
	l.tokens, l.positions, l.slots, l.seqOf = l.tokens[:0], l.positions[:0], l.slots[:0], l.seqOf[:0]
	l.blocks, l.logitRows = l.blocks[:0], l.logitRows[:0]
	e.inStep, e.chunk = e.inStep[:0], e.chunk[:0]
	budget := e.cfg.StepTokens
	for _, s := range seqs {
		if !s.runnable() || s.pending() != 1 || len(e.inStep) == e.cfg.MaxSequences {
			continue
		}
		if !e.kv.reserve(&s.kv, s.kv.len+1) {
			s.starved = true
			continue
		}
		s.starved = false
		e.include(s, 1)
		budget--
	}
	for _, s := range seqs {
		if !s.runnable() || s.pending() <= 1 || budget == 0 || len(e.inStep) == e.cfg.MaxSequences {
			continue
		}
		n := min(s.pending(), budget)
		e.include(s, n)
		budget -= n
	}
	if len(l.tokens) == 0 {
		return
	}
	e.m.forward(e.b, &e.act, l)
	row := 0
	for i, s := range e.inStep {
		e.kv.advance(&s.kv, s.tokens, s.kv.len+e.chunk[i])
		if s.pending() == 0 {
			e.b.readRow(s.logits, e.act.logits, row)
			row++
			s.sampleNext()
		}
	}
}

// include adds the next n tokens of s to the step; their blocks are
// reserved.
func (e *Engine) include(s *Sequence, n int) {
	l := &e.layout
	seq := int32(len(l.blocks))
	l.blocks = append(l.blocks, s.kv.blocks)
	for p := s.kv.len; p < s.kv.len+n; p++ {
		l.tokens = append(l.tokens, s.tokens[p])
		l.positions = append(l.positions, int32(p))
		l.slots = append(l.slots, s.kv.blocks[p/kvBlockTokens]*kvBlockTokens+int32(p%kvBlockTokens))
		l.seqOf = append(l.seqOf, seq)
	}
	if s.kv.len+n == len(s.tokens) {
		l.logitRows = append(l.logitRows, int32(len(l.tokens)-1))
	}
	e.inStep = append(e.inStep, s)
	e.chunk = append(e.chunk, n)
}

// sampleNext samples from the logits of the sequence's last token, emits
// the token and decides whether the sequence goes on.
func (s *Sequence) sampleNext() {
	if len(s.res.Logits) < s.logitSteps {
		s.res.Logits = append(s.res.Logits, slices.Clone(s.logits))
	}
	generated := len(s.tokens) - s.nPrompt
	if s.firstAt.IsZero() {
		s.firstAt = time.Now()
		s.res.Timings.TimeToFirstToken = s.firstAt.Sub(s.start)
		s.res.Timings.PromptDuration = s.res.Timings.TimeToFirstToken
	}
	var id int32
	if s.grammar != nil {
		id = s.sampler.SampleMasked(s.logits, s.grammar.Mask())
		switch {
		case id < 0 && s.grammar.Complete():
			// A complete value in a vocabulary without end tokens.
			s.finish(StopEOG, nil)
			return
		case id < 0:
			s.finish(StopEOG, fmt.Errorf("%w: no token of the vocabulary continues the output %q", ErrConstraint, s.text))
			return
		}
		if err := s.grammar.Accept(id); err != nil {
			s.finish(StopEOG, fmt.Errorf("%w: %w", ErrConstraint, err))
			return
		}
	} else {
		id = s.sampler.Sample(s.logits)
	}
	if s.e.m.tok.IsEOG(id) {
		s.finish(StopEOG, nil)
		return
	}
	var lp *Logprobs
	if s.logprobs >= 0 {
		lp = s.tokenLogprobs(id)
	}
	s.sampler.Accept(id)
	s.tokens = append(s.tokens, id)
	generated++
	piece, stopped := s.stops.Push(s.decoder.Add(id))
	s.text = append(s.text, piece...)
	if err := s.emit(Token{ID: id, Text: piece, Logprobs: lp}); err != nil {
		s.finish(StopLength, err)
		return
	}
	switch {
	case stopped:
		s.stoppedByString = true
		s.finish(StopEOG, nil)
	case generated >= s.maxTokens || len(s.tokens) > s.e.cfg.ContextLength:
		s.finish(StopLength, nil)
	}
}

// tokenLogprobs reports id's logprob from the logits it was just sampled
// from, which the sampler left penalised and masked.
func (s *Sequence) tokenLogprobs(id int32) *Logprobs {
	var chosen float32
	chosen, s.top = sample.Logprobs(s.logits, id, s.logprobs, s.top)
	tok := s.e.m.tok
	lp := &Logprobs{Logprob: chosen, Bytes: tok.Piece(id), Top: make([]Alternative, len(s.top))}
	for i, c := range s.top {
		lp.Top[i] = Alternative{ID: c.ID, Bytes: tok.Piece(c.ID), Logprob: c.Logprob}
	}
	return lp
}

// finish ends the sequence. Text held back for a possible stop string or a
// split character is real output once nothing can complete it.
func (s *Sequence) finish(reason string, err error) {
	s.res.StopReason = reason
	if !s.firstAt.IsZero() {
		s.res.Timings.DecodeDuration = time.Since(s.firstAt)
	}
	if err == nil && !s.stoppedByString {
		held, _ := s.stops.Push(s.decoder.Flush())
		if tail := held + s.stops.Flush(); tail != "" {
			s.text = append(s.text, tail...)
			err = s.emit(Token{ID: -1, Text: tail})
		}
	}
	s.done, s.err = true, err
}
