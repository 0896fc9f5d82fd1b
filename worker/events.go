package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// Outcomes of publishing a job's events, besides nil (all published).
var (
	// errFenced: a newer delivery of the job wrote to its stream, so this
	// worker no longer holds the job. It stops and leaves the message alone.
	errFenced = errors.New("a newer delivery of the job took it over")
	// errEnded: the job's stream already holds a terminal event, written
	// by an earlier delivery that finished: the job is done.
	errEnded = errors.New("the job's events already ended")
)

// eventStream publishes one job's events on its subject in the events
// stream, fenced: every publish expects the subject's last stream sequence
// to be the one this worker last saw there, so two workers can never both
// append after the same event. Tokens are queued by add, which never
// blocks the engine, and published by run with one publish in flight:
// whatever accumulated meanwhile goes out together in the next message,
// so a fast engine costs one round trip per message, not per token.
//
// When a publish finds someone else's message last, the stream decides: an
// event of a newer delivery means this worker lost the job (errFenced);
// one of an older delivery (a worker that was paused past its lease and
// woke) already wrote the next events, which are the same ones this worker
// would write, so it skips them and goes on after them.
//
// Every message is signed with the job's key (schemas.HeaderEventMAC), and
// what the stream holds counts only when signed: a message someone else
// with the worker identity wrote on the subject is passed over, though the
// fence still expects the subject's real last sequence, so such a message
// can neither put words in the job's answer nor stall it.
type eventStream struct {
	js       jetstream.JetStream
	stream   func(context.Context) (jetstream.Stream, error) // the events stream
	subject  string
	jobID    string
	workerID string
	delivery int
	signer   *schemas.EventSigner // nil: the job has no key, and its owner checks nothing
	// stop ends the job's generation when the stream is lost or ended.
	stop func(error)

	mu      sync.Mutex
	wake    chan struct{} // signalled when events are queued or the stream closes
	pending []schemas.Event
	nextSeq int    // seq of the next event queued
	lastSeq uint64 // stream sequence of the subject's last message, as far as this worker knows
	skip    int    // events up to this seq are in the stream already (-1: none)
	closed  bool
	tokens  int // token events queued

	done    chan struct{}
	outcome error
}

// resumeState is what a job's stream holds when a worker takes the job.
type resumeState struct {
	tokens []int32 // the token ids already sent, in order (the first choice's)
	ended  bool    // a terminal event is there: nothing is left to do
	newer  bool    // a newer delivery has written: this delivery is stale
	forged int     // messages passed over: not signed with the job's key

	// more holds the other choices' tokens sent (more[i-1] is choice i's).
	more [][]int32
}

func (st *resumeState) add(index int, id int32) {
	if index == 0 {
		st.tokens = append(st.tokens, id)
		return
	}
	for len(st.more) < index {
		st.more = append(st.more, nil)
	}
	st.more[index-1] = append(st.more[index-1], id)
}

func newEventStream(js jetstream.JetStream, stream func(context.Context) (jetstream.Stream, error), job schemas.Job, workerID string, delivery int, stop func(error)) *eventStream {
	// A malformed key fails job.Validate, and such a job only ever gets
	// its dead_lettered event, unsigned: its owner made no such key.
	signer, _ := job.EventKey.EventSigner()
	return &eventStream{
		js: js, stream: stream, subject: job.Stream, jobID: job.ID, workerID: workerID, delivery: delivery,
		signer: signer, stop: stop, wake: make(chan struct{}, 1), skip: -1, done: make(chan struct{}),
	}
}

// signed reports whether msg counts as the job's: signed with its key, or
// any message when the job has none.
func (s *eventStream) signed(msg *jetstream.RawStreamMsg) bool {
	return s.signer == nil || s.signer.Verify(msg.Subject, msg.Data, msg.Header.Get(schemas.HeaderEventMAC))
}

// resume reads what the job's stream already holds: nothing for a new job;
// for a job taken over, the tokens sent so far, from which the engine
// re-creates the sequence, and where this worker's events go on. A first
// delivery reads nothing: it expects an empty subject, and should that not
// hold, the first publish finds out and resyncs. Messages not signed with
// the job's key are passed over (and counted), and a signed one copied
// again (a replay) adds nothing.
func (s *eventStream) resume(ctx context.Context) (resumeState, error) {
	var st resumeState
	if s.delivery == 1 {
		return st, nil
	}
	str, err := s.stream(ctx)
	if err != nil {
		return st, err
	}
	last, err := str.GetLastMsgForSubject(ctx, s.subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read the last event of %s: %w", s.subject, err)
	}
	// A job taken over: read all of it, oldest first.
	var events, read []schemas.Event
	for seq := uint64(1); seq <= last.Sequence; {
		msg, err := str.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.subject))
		if err != nil {
			return st, fmt.Errorf("read the events of %s: %w", s.subject, err)
		}
		seq = msg.Sequence + 1
		if !s.signed(msg) {
			st.forged++
			continue
		}
		if read, err = schemas.DecodeEvents(read[:0], msg.Data); err != nil {
			return st, fmt.Errorf("event message %d of %s: %w", msg.Sequence, s.subject, err)
		}
		for _, ev := range read {
			switch {
			case ev.Seq < len(events): // a signed message stored again
			case ev.Seq > len(events):
				return st, fmt.Errorf("events of %s: event %d has seq %d", s.subject, len(events), ev.Seq)
			default:
				events = append(events, ev)
			}
		}
	}
	for _, ev := range events {
		switch {
		case ev.Delivery > s.delivery:
			st.newer = true
		case ev.Terminal():
			st.ended = true
		case ev.Type == schemas.EventToken && *ev.TokenID >= 0:
			st.add(ev.Index, *ev.TokenID)
		}
	}
	s.lastSeq, s.nextSeq = last.Sequence, len(events)
	for _, ev := range events {
		if ev.Type == schemas.EventToken {
			s.tokens++
		}
	}
	return st, nil
}

// add queues the job's next event, numbering it.
func (s *eventStream) add(ev schemas.Event) {
	s.queue(ev)
	s.signal()
}

// hold queues the job's next event, numbering it, without waking the
// publisher: for an event that the next one follows at once (the last
// token before the end), so that both go out in one message.
func (s *eventStream) hold(ev schemas.Event) { s.queue(ev) }

func (s *eventStream) queue(ev schemas.Event) {
	ev.JobID, ev.WorkerID, ev.Delivery = s.jobID, s.workerID, s.delivery
	s.mu.Lock()
	ev.Seq = s.nextSeq
	s.nextSeq++
	if ev.Type == schemas.EventToken {
		s.tokens++
	}
	if ev.Seq > s.skip {
		s.pending = append(s.pending, ev)
	}
	s.mu.Unlock()
}

func (s *eventStream) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// sentTokens is the number of token events the job has, sent or queued.
func (s *eventStream) sentTokens() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens
}

// close queues nothing more; wait then returns once everything queued is
// published, or the stream was lost.
func (s *eventStream) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.signal()
}

func (s *eventStream) wait() error {
	<-s.done
	return s.outcome
}

// publishRetry bounds the wait between attempts while the bus is down.
const publishRetry = 250 * time.Millisecond

// publishAttempt bounds one publish of events. An ack lost with a server
// that went down is given up on soon: retrying is safe, since the fence
// tells a stored attempt (the retry then finds this delivery's own events
// last, and skips them) from a lost one.
const publishAttempt = 2 * time.Second

// run publishes queued events until the stream is closed and empty, it is
// fenced or ended, or ctx is done (then queued events are left unsent: the
// job's lease is lost or the worker is stopping, and whoever takes the
// job over resumes from what the stream holds).
func (s *eventStream) run(ctx context.Context) {
	defer close(s.done)
	for {
		s.mu.Lock()
		batch := s.pending[:min(len(s.pending), schemas.MaxEventsPerMessage)]
		closed := s.closed
		s.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			select {
			case <-s.wake:
			case <-ctx.Done():
				s.outcome = ctx.Err()
				return
			}
			continue
		}
		err := s.publish(ctx, batch)
		switch {
		case err == nil:
			s.mu.Lock()
			s.pending = s.pending[:copy(s.pending, s.pending[len(batch):])]
			s.mu.Unlock()
		case errors.Is(err, errResynced):
		case errors.Is(err, errFenced), errors.Is(err, errEnded):
			s.outcome = err
			s.stop(err)
			return
		case ctx.Err() != nil:
			s.outcome = ctx.Err()
			return
		default:
			t := time.NewTimer(publishRetry)
			select {
			case <-t.C:
			case <-ctx.Done():
			}
			t.Stop()
		}
	}
}

// errResynced: a publish found an older delivery's events after the last
// message this worker knew of; what they cover is dropped from the queue,
// and the rest goes out in the next attempt.
var errResynced = errors.New("resynced with the stream")

// publish appends batch to the stream after the last message this worker
// knows of. On a conflict it reads what is there instead and either gives
// up the job or skips what an older delivery already wrote.
func (s *eventStream) publish(ctx context.Context, batch []schemas.Event) error {
	data, err := schemas.EncodeEvents(batch)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: s.subject, Data: data, Header: nats.Header{
		jetstream.ExpectedLastSubjSeqHeader: {strconv.FormatUint(s.lastSeq, 10)},
	}}
	if s.signer != nil {
		msg.Header[schemas.HeaderEventMAC] = []string{s.signer.Sign(s.subject, data)}
	}
	pctx, cancel := context.WithTimeout(ctx, publishAttempt)
	defer cancel()
	ack, err := bus.Publish(pctx, s.js.Conn(), msg)
	if err == nil {
		s.lastSeq = ack.Sequence
		return nil
	}
	if !bus.IsWrongLastSequence(err) {
		return fmt.Errorf("publish events of %s: %w", s.jobID, err)
	}
	return s.resync(ctx)
}

// resync reads, after a conflict, the messages stored on the subject since
// the last one this worker knew of. Only signed ones tell anything; the
// next publish goes after the last one, signed or not.
func (s *eventStream) resync(ctx context.Context) error {
	str, err := s.stream(ctx)
	if err != nil {
		return err
	}
	last, err := str.GetLastMsgForSubject(ctx, s.subject)
	if err != nil {
		return fmt.Errorf("read the last event of %s: %w", s.subject, err)
	}
	// Normally from the first message after the one this worker knew
	// of; from the last one when the subject holds less than it thought.
	skip := -1
	for seq := min(s.lastSeq+1, last.Sequence); seq <= last.Sequence; {
		msg := last
		if seq < last.Sequence {
			if msg, err = str.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(s.subject)); err != nil {
				return fmt.Errorf("read the events of %s: %w", s.subject, err)
			}
		}
		seq = msg.Sequence + 1
		if !s.signed(msg) {
			continue
		}
		events, err := schemas.DecodeEvents(nil, msg.Data)
		if err != nil {
			return fmt.Errorf("event message %d of %s: %w", msg.Sequence, s.subject, err)
		}
		ev := events[len(events)-1]
		switch {
		case ev.Delivery > s.delivery:
			return errFenced
		case ev.Terminal():
			return errEnded
		}
		skip = max(skip, ev.Seq)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastSeq = last.Sequence
	s.skip = max(s.skip, skip)
	keep := s.pending[:0]
	for _, ev := range s.pending {
		if ev.Seq > s.skip {
			keep = append(keep, ev)
		}
	}
	s.pending = keep
	return errResynced
}
