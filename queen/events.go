package queen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// eventRouter reads the events of every job this queen submitted, with one
// ordered consumer on the events stream filtered to the queen's subjects,
// and hands each job's events to its relay. One consumer serves any number
// of requests, and being ordered it delivers every stored event exactly
// once and in order, recovering by itself from gaps and reconnects. Only
// stored events reach it: the stream's fencing has already kept out what a
// worker that lost its job tried to write. Only signed ones reach a relay:
// the job's key, which only the worker holding the job has, keeps out what
// any other holder of the worker identity wrote.
type eventRouter struct {
	q *Queen

	mu     sync.Mutex
	relays map[string]*relay // by job ID
	cc     jetstream.ConsumeContext
	// next is the stream sequence to start from when the consumer has to
	// be made again, so that nothing stored meanwhile is missed.
	next uint64
}

// consumeHeartbeat is how often the server tells an idle consumer it is
// still there. Two missed, and the ordered consumer makes itself again
// from where it was: when the server it read from went down, jobs in
// flight pause for seconds, not the default ten.
const consumeHeartbeat = time.Second

func newEventRouter(q *Queen) *eventRouter { return &eventRouter{q: q, relays: map[string]*relay{}} }

// ensure starts the consumer unless it runs.
func (r *eventRouter) ensure(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cc != nil {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{r.q.cfg.Subjects.OwnerEvents(r.q.cfg.ID)},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	}
	if r.next > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, r.next
	}
	name := r.q.cfg.Subjects.StreamsStream()
	cons, err := r.q.js.OrderedConsumer(ctx, name, cfg)
	if err != nil {
		return fmt.Errorf("job events consumer on %s: %w", name, err)
	}
	cc, err := cons.Consume(r.handle, jetstream.ConsumeErrHandler(r.consumeError), jetstream.PullHeartbeat(consumeHeartbeat))
	if err != nil {
		return fmt.Errorf("consume job events on %s: %w", name, err)
	}
	r.cc = cc
	return nil
}

// consumeError drops a consumer that cannot go on (its stream is gone), so
// the next request makes it again.
func (r *eventRouter) consumeError(cc jetstream.ConsumeContext, err error) {
	if !errors.Is(err, jetstream.ErrStreamNotFound) && !errors.Is(err, jetstream.ErrConsumerDeleted) &&
		!errors.Is(err, jetstream.ErrConsumerNotFound) {
		r.q.log.Debug("job events consumer", "err", err)
		return
	}
	r.q.log.Warn("job events consumer lost; it is made again for the next request", "err", err)
	cc.Stop()
	r.mu.Lock()
	if r.cc == cc {
		r.cc = nil
	}
	r.mu.Unlock()
}

func (r *eventRouter) handle(msg jetstream.Msg) {
	var streamSeq uint64
	if meta, err := msg.Metadata(); err == nil {
		streamSeq = meta.Sequence.Stream
		r.mu.Lock()
		r.next = streamSeq + 1
		r.mu.Unlock()
	}
	subject := msg.Subject()
	jobID := subject[strings.LastIndexByte(subject, '.')+1:]
	r.mu.Lock()
	rl := r.relays[jobID]
	r.mu.Unlock()
	if rl == nil {
		return // a job this queen no longer follows
	}
	if !rl.signed(msg) {
		rl.forged(streamSeq)
		return
	}
	events, err := schemas.DecodeEvents(nil, msg.Data())
	if err != nil {
		rl.push(nil, 0, schemas.Errorf(schemas.CodeInternal, "unreadable job event: %v", err))
		return
	}
	rl.push(events, streamSeq, nil)
}

func (r *eventRouter) add(rl *relay) {
	r.mu.Lock()
	r.relays[rl.job.ID] = rl
	r.mu.Unlock()
}

func (r *eventRouter) remove(rl *relay) {
	r.mu.Lock()
	delete(r.relays, rl.job.ID)
	r.mu.Unlock()
}

// close stops the consumer.
func (r *eventRouter) close() {
	r.mu.Lock()
	cc := r.cc
	r.cc = nil
	r.mu.Unlock()
	if cc != nil {
		cc.Stop()
		<-cc.Closed()
	}
}
