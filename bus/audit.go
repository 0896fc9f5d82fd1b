package bus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/schemas"
)

// auditQueue bounds the events an Auditor holds while the stream is away;
// past it new events are dropped and counted, so that auditing never holds
// up the work it records.
const auditQueue = 1024

// auditDrain bounds how long Run keeps publishing what is queued after its
// context ends.
const auditDrain = 5 * time.Second

// Auditor publishes one producer's audit events to the audit stream, in
// order, each acknowledged by JetStream and chained to the one before: an
// event's body names the SHA-256 of the producer's previous body (Prev) and
// its number (Seq), and its Rbee-Audit-Hash header the SHA-256 of its own
// body. VerifyAudit then finds an event that was altered, removed or moved.
//
// A restarted producer continues its chain from the last event the stream
// holds for it. Two processes must not share a component and ID (a hive's
// data directory lock and unique worker IDs see to it), or their chains
// interleave and verify as broken.
type Auditor struct {
	js        jetstream.JetStream
	subj      schemas.Subjects
	component string
	id        string
	log       *slog.Logger

	queue chan schemas.AuditEvent

	mu      sync.Mutex
	dropped int
}

// NewAuditor makes the Auditor of one producer: component (queen, hive,
// worker) and its ID. Nothing is published until Run.
func NewAuditor(nc *nats.Conn, subj schemas.Subjects, component, id string, log *slog.Logger) (*Auditor, error) {
	if !schemas.ValidID(component) || !schemas.ValidID(id) {
		return nil, fmt.Errorf("auditor %q/%q: want IDs of letters, digits, '-' or '_'", component, id)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("auditor: jetstream: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Auditor{js: js, subj: subj, component: component, id: id, log: log,
		queue: make(chan schemas.AuditEvent, auditQueue)}, nil
}

// Record queues ev for publishing and returns at once. Time is set when
// zero; the chain fields are the Auditor's.
func (a *Auditor) Record(ev schemas.AuditEvent) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	select {
	case a.queue <- ev:
	default:
		a.mu.Lock()
		a.dropped++
		n := a.dropped
		a.mu.Unlock()
		a.log.Warn("audit queue full; event dropped", "type", ev.Type, "dropped", n)
	}
}

// Dropped is how many events Record dropped because the queue was full.
func (a *Auditor) Dropped() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dropped
}

// DroppedCounter is rbee_<subsystem>_audit_events_dropped_total, read
// from Dropped at each scrape: the events it counts were never chained, so
// VerifyAudit cannot report them.
func (a *Auditor) DroppedCounter(subsystem string) prometheus.Collector {
	return prometheus.NewCounterFunc(prometheus.CounterOpts{
		Namespace: "rbee", Subsystem: subsystem, Name: "audit_events_dropped_total",
		Help: "Audit events dropped because the auditor's queue was full (JetStream away): never chained, so rbee audit verify cannot report them.",
	}, func() float64 { return float64(a.Dropped()) })
}

// auditBatch bounds the events one round of Run publishes together.
const auditBatch = 256

// Run publishes queued events until ctx ends, then for up to auditDrain
// whatever is still queued. It is the only goroutine that publishes, which
// keeps the chain in order. What has queued up goes out together, each
// event chained to the one before, without waiting for one acknowledgement
// before sending the next: one connection delivers them in order, and one
// round trip per event could not keep up with a busy queen.
func (a *Auditor) Run(ctx context.Context) {
	var (
		chain   auditLink
		resumed bool
	)
	// send publishes evs. An event the stream refuses for good is logged
	// and left out; the events after it are chained to it already, so
	// VerifyAudit reports it missing, as it is.
	send := func(ctx context.Context, evs []schemas.AuditEvent) bool {
		if !resumed {
			link, err := a.resume(ctx)
			if err != nil {
				a.log.Warn("audit chain not resumed", "err", err, "events", len(evs))
				return false
			}
			chain, resumed = link, true
		}
		next, ok := a.publishAll(ctx, chain, evs)
		chain = next
		return ok
	}
	// Publishing goes on for auditDrain after ctx ends: an event in flight
	// then is not cut off (and sent twice), and what is queued still goes.
	pubCtx, stopPublishing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPublishing()
	drain := time.AfterFunc(auditDrain, stopPublishing)
	drain.Stop()
	stopWatch := context.AfterFunc(ctx, func() { drain.Reset(auditDrain) })
	defer func() {
		stopWatch()
		drain.Stop()
	}()
	batch := make([]schemas.AuditEvent, 0, auditBatch)
	for {
		batch = batch[:0]
		select {
		case ev := <-a.queue:
			batch = append(batch, ev)
		case <-ctx.Done():
		}
	more:
		for len(batch) < auditBatch {
			select {
			case ev := <-a.queue:
				batch = append(batch, ev)
			default:
				break more
			}
		}
		if len(batch) == 0 {
			return // ctx ended and nothing is left
		}
		if !send(pubCtx, batch) && pubCtx.Err() != nil {
			a.log.Warn("audit events not published before stopping", "left", len(a.queue)+len(batch))
			return
		}
	}
}

// publishAll chains evs to link and publishes them one after the other
// without waiting, then collects the acknowledgements. An event whose
// publish failed is published again, in order, until the stream takes it
// (its message ID keeps a copy that was stored after all from counting
// twice); one the stream refuses for good is logged and left out. It
// reports false when ctx ended before every event was stored.
func (a *Auditor) publishAll(ctx context.Context, link auditLink, evs []schemas.AuditEvent) (auditLink, bool) {
	msgs := make([]*nats.Msg, 0, len(evs))
	futures := make([]jetstream.PubAckFuture, 0, len(evs))
	for _, ev := range evs {
		msg, next, err := a.message(link, ev)
		if err != nil {
			a.log.Warn("encode audit event", "type", ev.Type, "err", err)
			continue
		}
		link = next
		f, err := a.js.PublishMsgAsync(msg)
		if err != nil {
			f = nil // published again below
		}
		msgs, futures = append(msgs, msg), append(futures, f)
	}
	ok := true
	for i, f := range futures {
		if f != nil {
			select {
			case <-f.Ok():
				continue
			case <-f.Err():
			case <-ctx.Done():
			}
		}
		if _, err := PublishRetry(ctx, a.js, msgs[i]); err != nil {
			a.log.Warn("publish audit event", "subject", msgs[i].Subject, "err", err)
			if ctx.Err() != nil {
				ok = false
			}
		}
	}
	return link, ok
}

// Start runs the auditor in a goroutine of its own until the returned stop
// is called, which then waits for Run to publish what is queued and return.
// A component starts it before its work and stops it after, so that the
// events of its last moments are published too.
func (a *Auditor) Start() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.Run(ctx) })
	return func() {
		cancel()
		wg.Wait()
	}
}

// auditLink is where a producer's chain stands: its last Seq and hash.
type auditLink struct {
	seq  uint64
	hash string
}

// resume reads the producer's last event from the stream, retrying while
// the stream is away, so that a restart continues the chain.
func (a *Auditor) resume(ctx context.Context) (auditLink, error) {
	for attempt := 0; ; attempt++ {
		link, err := a.last(ctx)
		if err == nil {
			return link, nil
		}
		a.log.Debug("read the audit chain's last event", "err", err, "attempt", attempt)
		t := time.NewTimer(backoff(attempt, backoffMin, backoffMax))
		select {
		case <-ctx.Done():
			t.Stop()
			return auditLink{}, fmt.Errorf("%w (last error: %v)", context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

func (a *Auditor) last(ctx context.Context) (auditLink, error) {
	actx, cancel := context.WithTimeout(ctx, publishAttempt)
	defer cancel()
	str, err := a.js.Stream(actx, a.subj.EventsStream())
	if err != nil {
		return auditLink{}, fmt.Errorf("audit stream %s: %w", a.subj.EventsStream(), err)
	}
	msg, err := str.GetLastMsgForSubject(actx, a.subj.AuditOf(a.component, a.id)+".>")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return auditLink{}, nil
	}
	if err != nil {
		return auditLink{}, fmt.Errorf("last audit event of %s %s: %w", a.component, a.id, err)
	}
	var ev schemas.AuditEvent
	if err := json.Unmarshal(msg.Data, &ev); err != nil {
		return auditLink{}, fmt.Errorf("last audit event of %s %s: %w", a.component, a.id, err)
	}
	return auditLink{seq: ev.Seq, hash: msg.Header.Get(schemas.HeaderAuditHash)}, nil
}

// message is ev chained to link, as published, and the link it makes.
// The message ID makes a retry after a lost answer store it once.
func (a *Auditor) message(link auditLink, ev schemas.AuditEvent) (*nats.Msg, auditLink, error) {
	ev.Component, ev.Source, ev.Seq, ev.Prev = a.component, a.id, link.seq+1, link.hash
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, link, fmt.Errorf("encode audit event: %w", err)
	}
	sum := AuditHash(data)
	msg := nats.NewMsg(a.subj.Audit(a.component, a.id, ev.Type))
	msg.Data = data
	msg.Header.Set(schemas.HeaderAuditHash, sum)
	msg.Header.Set(schemas.HeaderMsgID, a.component+"."+a.id+"."+strconv.FormatUint(ev.Seq, 10))
	return msg, auditLink{seq: ev.Seq, hash: sum}, nil
}

// AuditHash is the chain's hash of an event's body: SHA-256, in hex.
func AuditHash(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// AuditRecord is one stored audit event, as AuditRecords reads it.
// Body is the event as stored, byte for byte, which Hash is the SHA-256 of.
type AuditRecord struct {
	StreamSeq uint64             `json:"stream_seq"`
	Subject   string             `json:"subject"`
	Hash      string             `json:"hash"`
	Body      json.RawMessage    `json:"event"`
	Event     schemas.AuditEvent `json:"-"`
}

// AuditRecordOf is the record of one message of the audit stream; the
// error says why its body does not decode, and the record holds what could
// be read.
func AuditRecordOf(msg jetstream.Msg) (AuditRecord, error) {
	rec := AuditRecord{Subject: msg.Subject(), Hash: msg.Headers().Get(schemas.HeaderAuditHash), Body: msg.Data()}
	if meta, err := msg.Metadata(); err == nil {
		rec.StreamSeq = meta.Sequence.Stream
	}
	return rec, json.Unmarshal(msg.Data(), &rec.Event)
}

// AuditRecords calls f with every audit event the stream holds from since
// on (zero: all), in stream order, and returns when it has seen the last
// one there was when it began, or when f returns an error.
func AuditRecords(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, since time.Time, f func(AuditRecord) error) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj.AllAudit()}}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := js.OrderedConsumer(ctx, subj.EventsStream(), cfg)
	if err != nil {
		return fmt.Errorf("read audit stream %s: %w", subj.EventsStream(), err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("read audit stream %s: %w", subj.EventsStream(), err)
	}
	for pending := info.NumPending; pending > 0; {
		batch, err := cons.Fetch(int(min(pending, 256)), jetstream.FetchContext(ctx))
		if err != nil {
			return fmt.Errorf("read audit stream %s: %w", subj.EventsStream(), err)
		}
		for msg := range batch.Messages() {
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("read audit stream %s: %w", subj.EventsStream(), err)
			}
			// A body that does not decode still counts: VerifyAudit reports it.
			rec, _ := AuditRecordOf(msg)
			if err := f(rec); err != nil {
				return err
			}
			pending = meta.NumPending
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("read audit stream %s: %w", subj.EventsStream(), err)
		}
	}
	return nil
}

// AuditProblem is one break in a producer's chain.
type AuditProblem struct {
	StreamSeq uint64 `json:"stream_seq"`
	Subject   string `json:"subject"`
	Problem   string `json:"problem"`
}

// AuditChain is where one producer's chain stands after VerifyAudit.
type AuditChain struct {
	Component string `json:"component"`
	Source    string `json:"source"`
	// FirstSeq is the first event the stream still holds: events before it
	// aged out, or were removed, which no chain can tell apart.
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	// LastHash anchors the chain: an operator who keeps it elsewhere can
	// tell later that nothing up to it changed.
	LastHash string `json:"last_hash"`
	Events   int    `json:"events"`
}

// AuditReport is what VerifyAudit found.
type AuditReport struct {
	Events   int            `json:"events"`
	Chains   []AuditChain   `json:"chains"`
	Problems []AuditProblem `json:"problems"`
}

// OK reports whether every chain is whole.
func (r AuditReport) OK() bool { return len(r.Problems) == 0 }

// VerifyAudit reads the whole audit stream and checks every producer's
// chain: each event's hash is its body's, its producer and subject agree,
// its Seq follows the one before by one and its Prev is that one's hash.
func VerifyAudit(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects) (AuditReport, error) {
	var report AuditReport
	chains := map[string]*AuditChain{}
	var order []string
	problem := func(rec AuditRecord, format string, args ...any) {
		report.Problems = append(report.Problems, AuditProblem{StreamSeq: rec.StreamSeq, Subject: rec.Subject,
			Problem: fmt.Sprintf(format, args...)})
	}
	err := AuditRecords(ctx, js, subj, time.Time{}, func(rec AuditRecord) error {
		report.Events++
		component, id, ok := subj.AuditProducer(rec.Subject)
		if !ok {
			problem(rec, "not an audit subject")
			return nil
		}
		if got := AuditHash(rec.Body); got != rec.Hash {
			problem(rec, "altered: the body hashes to %.12s, the header says %.12s", got, rec.Hash)
		}
		ev := rec.Event
		if ev.Component != component || ev.Source != id || subj.Audit(component, id, ev.Type) != rec.Subject {
			problem(rec, "the event says %s %s %s, its subject another producer or type", ev.Component, ev.Source, ev.Type)
		}
		key := component + "." + id
		c, seen := chains[key]
		if !seen {
			c = &AuditChain{Component: component, Source: id, FirstSeq: ev.Seq}
			chains[key] = c
			order = append(order, key)
		} else {
			switch {
			case ev.Seq <= c.LastSeq:
				// The chain goes on from its furthest event.
				problem(rec, "moved or repeated: seq %d after %d", ev.Seq, c.LastSeq)
				c.Events++
				return nil
			case ev.Seq != c.LastSeq+1:
				problem(rec, "removed: seq %d after %d, %d events missing", ev.Seq, c.LastSeq, ev.Seq-c.LastSeq-1)
			case ev.Prev != c.LastHash:
				problem(rec, "broken link: prev %.12s, the event before hashes to %.12s", ev.Prev, c.LastHash)
			}
		}
		c.LastSeq, c.LastHash = ev.Seq, rec.Hash
		c.Events++
		return nil
	})
	if err != nil {
		return report, err
	}
	for _, key := range order {
		report.Chains = append(report.Chains, *chains[key])
	}
	return report, nil
}
