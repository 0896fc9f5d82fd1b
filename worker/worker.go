package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
)

// Defaults for Config.
const (
	DefaultSlots             = 1
	DefaultAckWait           = 30 * time.Second
	DefaultMaxAttempts       = 3
	DefaultHeartbeatInterval = 2 * time.Second
	DefaultShutdownGrace     = 30 * time.Second
)

const (
	// busTimeout bounds one heartbeat put, ack or key deletion.
	busTimeout = 5 * time.Second
	// minAckWait leaves the lease, renewed every third of it, room for a
	// few round trips.
	minAckWait = 100 * time.Millisecond
	// pullRetryMin is the wait after a first failed pull; it doubles with
	// each failure in a row, up to pullRetryMax. A failed pull binds the
	// consumer again, within rebindTimeout: it is gone, perhaps with a
	// restarted server's state.
	pullRetryMin  = 50 * time.Millisecond
	pullRetryMax  = time.Second
	rebindTimeout = 2 * time.Second
)

// Config is one worker's identity and limits.
type Config struct {
	ID            string // worker ID (schemas.ValidID); unique
	HiveID        string // may be empty when run by hand
	Model         string // model name, a subject token (schemas.ValidModel)
	Slots         int    // jobs decoded together in one batch (default 1)
	ContextLength int    // per job; 0 = the model's trained context
	// KVTokens sizes the KV cache shared by the jobs in positions (default
	// Slots × ContextLength). Jobs take it in blocks as they grow; with a
	// smaller pool, jobs wait for room, and a running job that needs more
	// pauses the youngest one instead of failing.
	KVTokens int
	Subjects schemas.Subjects
	// AckWait is the job lease (default 30s), renewed while generating.
	AckWait time.Duration
	// MaxAttempts bounds the deliveries of one job that may run it (default
	// 3; -1 unbounded). A worker creating the jobs consumer allows one
	// delivery more, in which whichever worker gets it dead-letters the
	// job instead: a job that kills its workers stops there, and its
	// client gets an error instead of silence.
	MaxAttempts int
	// HeartbeatInterval is how often the worker refreshes its key in
	// Subjects.WorkersBucket() and publishes on Subjects.Heartbeat (default
	// 2s). It must be well below the bucket's TTL.
	HeartbeatInterval time.Duration
	// ShutdownGrace is how long jobs in hand may run once Run's context is
	// done (default 30s).
	ShutdownGrace time.Duration
	// OrphanGrace: a worker of a hive (HiveID set) whose hive's key has been
	// missing from the hives bucket this long drains and stops, as if told
	// to, so that nothing outlives a hive that was killed and not restarted.
	// 0: never.
	OrphanGrace time.Duration
	// Load tells of the model's load (LoadModel) in the ready message Run
	// publishes on Subjects.Progress once the worker takes jobs.
	Load LoadStats
	// MetricsURL is where the worker's metrics are served, told in its
	// heartbeat so that its hive can scrape them; empty: not served.
	MetricsURL string
}

func (c Config) withDefaults() (Config, error) {
	if c.Slots == 0 {
		c.Slots = DefaultSlots
	}
	if c.AckWait == 0 {
		c.AckWait = DefaultAckWait
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = DefaultMaxAttempts
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = DefaultShutdownGrace
	}
	if _, err := schemas.NewSubjects(c.Subjects.Prefix); err != nil {
		return c, err
	}
	switch {
	case !schemas.ValidID(c.ID):
		return c, fmt.Errorf("worker ID %q: want 1-128 letters, digits, '-' or '_'", c.ID)
	case c.HiveID != "" && !schemas.ValidID(c.HiveID):
		return c, fmt.Errorf("hive ID %q: want 1-128 letters, digits, '-' or '_'", c.HiveID)
	case !schemas.ValidModel(c.Model):
		return c, fmt.Errorf("model %q: want 1-128 letters, digits, '-', '_' or ':'", c.Model)
	case c.Slots < 1:
		return c, fmt.Errorf("slots %d: want at least 1", c.Slots)
	case c.ContextLength < 0:
		return c, fmt.Errorf("context length %d: want 0 (the model's) or more", c.ContextLength)
	case c.KVTokens < 0:
		return c, fmt.Errorf("KV tokens %d: want 0 (slots × context) or more", c.KVTokens)
	case c.AckWait < minAckWait:
		return c, fmt.Errorf("ack wait %v: want at least %v", c.AckWait, minAckWait)
	case c.MaxAttempts < -1:
		return c, fmt.Errorf("max attempts %d: want -1 (unbounded) or at least 1", c.MaxAttempts)
	case c.HeartbeatInterval < 0:
		return c, fmt.Errorf("heartbeat interval %v: want more than 0", c.HeartbeatInterval)
	case c.ShutdownGrace < 0:
		return c, fmt.Errorf("shutdown grace %v: want more than 0", c.ShutdownGrace)
	case c.OrphanGrace < 0:
		return c, fmt.Errorf("orphan grace %v: want 0 (never) or more", c.OrphanGrace)
	}
	if c.MetricsURL != "" {
		if u, err := url.Parse(c.MetricsURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c, fmt.Errorf("metrics URL %q: want http://HOST:PORT/PATH", c.MetricsURL)
		}
	}
	return c, nil
}

// liveFields are the Config fields ApplyConfig changes while the worker
// runs; Load, a report of the past, is not compared.
var liveFields = map[string]bool{"HeartbeatInterval": true, "ShutdownGrace": true, "Load": true}

// fixedChanges names the fields other than the live ones in which next
// differs from old.
func fixedChanges(old, next Config) []string {
	a, b := reflect.ValueOf(old), reflect.ValueOf(next)
	var out []string
	for i := range a.NumField() {
		name := a.Type().Field(i).Name
		if !liveFields[name] && a.Field(i).Interface() != b.Field(i).Interface() {
			out = append(out, name)
		}
	}
	return out
}

// Worker serves one model from its work queue. Make it with New and start
// it with Run, once.
type Worker struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	cfg     Config
	log     *slog.Logger
	metrics *metrics
	sched   *infer.Scheduler
	aux     *auxEngine // embed, tokenize and detokenize jobs
	auditor *bus.Auditor
	// cancelWatch tells which jobs are cancelled, and stops them.
	cancelWatch *cancelWatch
	ctxLen      int
	started     atomic.Bool

	// Handles of the events stream and the cancels bucket, looked up once:
	// each lookup is a round trip (a job taken over reads the stream, the
	// cancel watch the bucket).
	handleMu      sync.Mutex
	eventsHandle  jetstream.Stream
	cancelsHandle jetstream.KeyValue
	ackWait       atomic.Int64  // the jobs consumer's lease, in nanoseconds
	maxDeliver    atomic.Int64  // the jobs consumer's MaxDeliver; -1 unbounded
	progress      atomic.Uint64 // tokens produced, for the heartbeat

	// The live settings, which ApplyConfig changes: cfg keeps the ones the
	// worker started with.
	beatEvery atomic.Int64  // heartbeat interval, in nanoseconds
	grace     atomic.Int64  // shutdown grace, in nanoseconds
	retick    chan struct{} // tells the heartbeat of a new interval

	mu    sync.Mutex // guards state and busy
	state string
	busy  int
}

// New checks cfg, fills in its defaults and makes the engine that batches
// the worker's jobs, with its scratch memory and KV pool. Metrics
// are registered with reg; a nil reg keeps them unregistered. A nil logger
// discards.
func New(nc *nats.Conn, model *infer.Model, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Worker, error) {
	if nc == nil || model == nil {
		return nil, errors.New("worker: a NATS connection and a model are required")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("worker config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("worker %s: jetstream: %w", cfg.ID, err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("worker %s: metrics: %w", cfg.ID, err)
	}
	w := &Worker{
		nc: nc, js: js, cfg: cfg, metrics: m, state: schemas.WorkerStarting,
		log: logger.With("worker_id", cfg.ID, "model", cfg.Model), retick: make(chan struct{}, 1),
	}
	w.beatEvery.Store(int64(cfg.HeartbeatInterval))
	w.grace.Store(int64(cfg.ShutdownGrace))
	w.cancelWatch = newCancelWatch(nc, cfg.Subjects.CancelKey(""), w.cancels, w.log)
	if w.auditor, err = bus.NewAuditor(nc, cfg.Subjects, "worker", cfg.ID, w.log); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	e, err := model.NewEngine(infer.EngineConfig{
		MaxSequences: cfg.Slots, ContextLength: cfg.ContextLength, KVTokens: cfg.KVTokens,
	})
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", cfg.ID, err)
	}
	w.sched = infer.NewScheduler(e)
	w.ctxLen = e.Config().ContextLength
	w.aux = newAuxEngine(model, w.ctxLen)
	if err := w.registerLive(reg); err != nil {
		return nil, fmt.Errorf("worker %s: metrics: %w", cfg.ID, err)
	}
	return w, nil
}

// ApplyConfig applies what of cfg can change while the worker runs: the
// heartbeat interval, from the next beat, and the shutdown grace, for a
// drain not yet begun. Anything else (identity, engine, lease, subjects)
// needs a new process: a cfg that changes it is refused, with the fields
// named, and nothing is applied. The log level is the caller's (a
// slog.LevelVar).
func (w *Worker) ApplyConfig(cfg Config) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return fmt.Errorf("worker %s config: %w", w.cfg.ID, err)
	}
	if fields := fixedChanges(w.cfg, cfg); len(fields) > 0 {
		return fmt.Errorf("worker %s: %s cannot change while it runs; restart it", w.cfg.ID, strings.Join(fields, ", "))
	}
	if old := w.heartbeatInterval(); old != cfg.HeartbeatInterval {
		w.beatEvery.Store(int64(cfg.HeartbeatInterval))
		select {
		case w.retick <- struct{}{}:
		default:
		}
		w.log.Info("heartbeat interval changed", "from", old, "to", cfg.HeartbeatInterval)
	}
	if old := w.shutdownGrace(); old != cfg.ShutdownGrace {
		w.grace.Store(int64(cfg.ShutdownGrace))
		w.log.Info("shutdown grace changed", "from", old, "to", cfg.ShutdownGrace)
	}
	return nil
}

func (w *Worker) heartbeatInterval() time.Duration { return time.Duration(w.beatEvery.Load()) }
func (w *Worker) shutdownGrace() time.Duration     { return time.Duration(w.grace.Load()) }

// Run serves until ctx is done, then drains (see the package doc) and
// returns nil. It returns an error if the worker cannot start: no workers
// bucket, or no jobs consumer.
func (w *Worker) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return fmt.Errorf("worker %s: Run was already called", w.cfg.ID)
	}
	kv, err := w.js.KeyValue(ctx, w.cfg.Subjects.WorkersBucket())
	if err != nil {
		return fmt.Errorf("worker %s: workers bucket %s: %w", w.cfg.ID, w.cfg.Subjects.WorkersBucket(), err)
	}
	w.checkTTL(ctx, kv)
	ctx, stopOrphan := w.watchHive(ctx)
	defer stopOrphan()

	// The auditor outlives the jobs, whose ends it records.
	defer w.auditor.Start()()

	// The heartbeat outlives ctx: "draining" must be seen until the end.
	beatNow, stopHeartbeat := make(chan struct{}, 1), make(chan struct{})
	var hb sync.WaitGroup
	hb.Go(func() { w.heartbeat(context.WithoutCancel(ctx), kv, beatNow, stopHeartbeat) })
	defer func() {
		close(stopHeartbeat)
		hb.Wait()
		w.removeKey(context.WithoutCancel(ctx), kv)
	}()
	announce := func(state string) {
		w.mu.Lock()
		w.state = state
		w.mu.Unlock()
		select {
		case beatNow <- struct{}{}:
		default:
		}
	}

	if _, err := w.bindConsumer(ctx); err != nil {
		return fmt.Errorf("worker %s: %w", w.cfg.ID, err)
	}
	// The cancel watch outlives the jobs, which it stops.
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	var watch sync.WaitGroup
	watch.Go(func() { w.cancelWatch.run(watchCtx) })
	defer func() {
		stopWatch()
		watch.Wait()
	}()

	// The scheduler batches the jobs in hand; it stops after the last.
	schedCtx, stopSched := context.WithCancel(context.WithoutCancel(ctx))
	var sched sync.WaitGroup
	sched.Go(func() { w.sched.Run(schedCtx) })
	defer func() {
		stopSched()
		sched.Wait()
	}()
	// Jobs in hand outlive ctx by up to ShutdownGrace.
	jobsCtx, stopJobs := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopJobs(nil)
	announce(schemas.WorkerReady)
	w.log.Info("worker ready", "slots", w.cfg.Slots, "context_length", w.ctxLen,
		"kv_tokens", w.sched.Engine().Config().KVTokens, "load_time", w.cfg.Load.Took)
	ready := progressPublisher{nc: w.nc, cfg: w.cfg, log: w.log}
	ready.publish(schemas.WorkerProgress{Phase: schemas.LoadReady, DoneBytes: w.cfg.Load.Bytes,
		TotalBytes: w.cfg.Load.Bytes, LoadMillis: w.cfg.Load.Took.Milliseconds()})

	var jobs sync.WaitGroup
	if err := w.pull(ctx, jobsCtx, &jobs); err != nil {
		return fmt.Errorf("worker %s: %w", w.cfg.ID, err)
	}
	announce(schemas.WorkerDraining)
	drain := w.shutdownGrace()
	w.log.Info("worker draining", "busy", w.busySlots(), "grace", drain)
	grace := time.AfterFunc(drain, func() { stopJobs(errShutdown) })
	jobs.Wait()
	grace.Stop()
	w.log.Info("worker stopped")
	return nil
}

// bindConsumer binds to the model's jobs consumer, creating it with this
// worker's lease and attempts if it is missing, and adopts the lease and
// delivery limit the consumer has: renewing on another worker's schedule
// would lose jobs to redelivery.
func (w *Worker) bindConsumer(ctx context.Context) (jetstream.Consumer, error) {
	maxDeliver := -1
	if w.cfg.MaxAttempts > 0 {
		maxDeliver = w.cfg.MaxAttempts + 1
	}
	cons, err := bus.EnsureJobsConsumer(ctx, w.js, w.cfg.Subjects, w.cfg.Model, w.cfg.AckWait, maxDeliver)
	if err != nil {
		return nil, err
	}
	w.maxDeliver.Store(int64(cons.CachedInfo().Config.MaxDeliver))
	lease := cons.CachedInfo().Config.AckWait
	if lease != w.cfg.AckWait {
		w.log.Warn("the jobs consumer has another lease than this worker's configuration; using the consumer's",
			"consumer_ack_wait", lease, "configured", w.cfg.AckWait)
	}
	w.ackWait.Store(int64(max(lease, minAckWait)))
	return cons, nil
}

// eventsStream is the job events stream.
func (w *Worker) eventsStream(ctx context.Context) (jetstream.Stream, error) {
	w.handleMu.Lock()
	defer w.handleMu.Unlock()
	if w.eventsHandle == nil {
		s, err := w.js.Stream(ctx, w.cfg.Subjects.StreamsStream())
		if err != nil {
			return nil, fmt.Errorf("events stream %s: %w", w.cfg.Subjects.StreamsStream(), err)
		}
		w.eventsHandle = s
	}
	return w.eventsHandle, nil
}

// cancels is the cancels bucket.
func (w *Worker) cancels(ctx context.Context) (jetstream.KeyValue, error) {
	w.handleMu.Lock()
	defer w.handleMu.Unlock()
	if w.cancelsHandle == nil {
		kv, err := w.js.KeyValue(ctx, w.cfg.Subjects.CancelsBucket())
		if err != nil {
			return nil, fmt.Errorf("cancels bucket %s: %w", w.cfg.Subjects.CancelsBucket(), err)
		}
		w.cancelsHandle = kv
	}
	return w.cancelsHandle, nil
}

// lease is the jobs consumer's AckWait.
func (w *Worker) lease() time.Duration { return time.Duration(w.ackWait.Load()) }

// checkTTL warns when heartbeats are too rare to keep the worker's key alive.
func (w *Worker) checkTTL(ctx context.Context, kv jetstream.KeyValue) {
	st, err := kv.Status(ctx)
	if err != nil {
		w.log.Warn("read workers bucket status", "err", err)
		return
	}
	if ttl := st.TTL(); ttl > 0 && w.cfg.HeartbeatInterval*2 > ttl {
		w.log.Warn("heartbeat interval is too long for the workers bucket TTL; the worker may seem to come and go",
			"interval", w.cfg.HeartbeatInterval, "ttl", ttl)
	}
}

// pull takes a job whenever the batch has a free slot, until ctx is done,
// and runs it on that slot's goroutine (tracked by jobs) under jobsCtx,
// which outlives ctx by the shutdown grace. A job waits in the stream,
// where any worker of the model can take it, until a slot here is free.
// When ctx ends the puller withdraws its requests at once, and the jobs
// already on their way are handed straight back.
//
// A slot's goroutine lives as long as the pull: one started per job grew
// its stack anew through the job's decoding, tokenizing and publishing,
// and copying stacks was a tenth of the worker's CPU at 4,000 jobs/s.
func (w *Worker) pull(ctx, jobsCtx context.Context, jobs *sync.WaitGroup) error {
	p, err := bus.NewPuller(w.nc, w.cfg.Subjects.JobsStream(), w.cfg.Subjects.JobsConsumer(w.cfg.Model), w.cfg.Slots)
	if err != nil {
		return err
	}
	taken := make(chan jetstream.Msg)
	defer close(taken)
	for range w.cfg.Slots {
		jobs.Go(func() {
			for msg := range taken {
				w.handle(jobsCtx, w.log, msg)
				p.Done()
			}
		})
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), busTimeout)
		defer cancel()
		for _, msg := range p.Stop(sctx) {
			w.handBack(msg)
		}
	}()
	failures := 0
	for {
		msg, err := p.Next(ctx)
		switch {
		case ctx.Err() != nil:
			if msg != nil {
				w.handBack(msg)
			}
			return nil
		case err != nil:
			failures++
			w.log.Warn("pull a job; binding the jobs consumer again", "err", err, "failures_in_a_row", failures)
			if !w.rebind(ctx, failures) {
				return nil
			}
			continue
		}
		failures = 0
		w.observeQueueWait(msg)
		taken <- msg // a slot is free, so its goroutine takes it at once
	}
}

// rebind binds the jobs consumer again after the failures-th failed pull in
// a row, after a wait that doubles with each, so that a leader election or
// a restart is not met with a storm of requests. It reports false when ctx
// ended meanwhile.
func (w *Worker) rebind(ctx context.Context, failures int) bool {
	t := time.NewTimer(min(pullRetryMin<<min(failures-1, 10), pullRetryMax))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	}
	bctx, cancel := context.WithTimeout(ctx, rebindTimeout)
	defer cancel()
	if _, err := w.bindConsumer(bctx); err != nil {
		w.log.Warn("bind the jobs consumer again", "err", err)
	} else {
		w.log.Info("jobs consumer bound again")
	}
	return ctx.Err() == nil
}

func (w *Worker) handBack(msg jetstream.Msg) {
	id := msg.Headers().Get(schemas.HeaderMsgID)
	if err := msg.Nak(); err != nil {
		w.log.Warn("hand back a job pulled during shutdown", "job_id", id, "err", err)
	}
	w.metrics.jobs.WithLabelValues(outcomeRequeued).Inc()
	if schemas.ValidID(id) {
		w.audit(msg, schemas.AuditEvent{JobID: id, Principal: principalOf(msg), Outcome: outcomeRequeued})
	}
}

func (w *Worker) busySlots() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.busy
}

func (w *Worker) addBusy(n int) {
	w.mu.Lock()
	w.busy += n
	busy := w.busy
	w.mu.Unlock()
	w.metrics.busy.Set(float64(busy))
}

// heartbeat puts and publishes the worker's state every HeartbeatInterval
// and whenever beatNow says the state changed, until stop is closed. One
// goroutine writes, so the key never goes back to an older state.
func (w *Worker) heartbeat(ctx context.Context, kv jetstream.KeyValue, beatNow, stop <-chan struct{}) {
	t := time.NewTicker(w.heartbeatInterval())
	defer t.Stop()
	for {
		w.beat(ctx, kv)
		select {
		case <-t.C:
		case <-w.retick:
			t.Reset(w.heartbeatInterval())
		case <-beatNow:
		case <-stop:
			// A state change announced just before the stop is still told.
			select {
			case <-beatNow:
				w.beat(ctx, kv)
			default:
			}
			return
		}
	}
}

func (w *Worker) beat(ctx context.Context, kv jetstream.KeyValue) {
	w.mu.Lock()
	hb := schemas.WorkerHeartbeat{
		WorkerID: w.cfg.ID, HiveID: w.cfg.HiveID, Model: w.cfg.Model,
		State: w.state, Slots: w.cfg.Slots, Busy: w.busy,
		PID: os.Getpid(), Context: w.ctxLen, Progress: w.progress.Load(), MetricsURL: w.cfg.MetricsURL, Time: time.Now().UTC(),
	}
	w.mu.Unlock()
	data, err := json.Marshal(hb)
	if err != nil {
		w.log.Error("encode heartbeat", "err", err)
		return
	}
	pctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	if _, err := kv.Put(pctx, w.cfg.ID, data); err != nil {
		w.log.Warn("put heartbeat", "bucket", w.cfg.Subjects.WorkersBucket(), "err", err)
	}
	if err := w.nc.Publish(w.cfg.Subjects.Heartbeat(schemas.KindWorker, w.cfg.ID), data); err != nil {
		w.log.Warn("publish heartbeat", "err", err)
	}
}

func (w *Worker) removeKey(ctx context.Context, kv jetstream.KeyValue) {
	ctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	if err := kv.Delete(ctx, w.cfg.ID); err != nil {
		w.log.Warn("delete heartbeat key; it expires with the bucket TTL", "err", err)
	}
}
