package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
)

// Job outcomes besides the error codes.
const (
	outcomeCompleted = schemas.OutcomeCompleted
	outcomeRequeued  = schemas.OutcomeRequeued
	outcomeTakenOver = schemas.OutcomeTakenOver
)

type metrics struct {
	jobs         *prometheus.CounterVec // outcome
	tokens       prometheus.Counter
	promptTokens prometheus.Counter
	firstToken   prometheus.Histogram
	interToken   prometheus.Histogram
	decodeRate   prometheus.Histogram
	queueWait    prometheus.Histogram
	busy         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "jobs_total",
			Help: "Jobs taken from the queue, by outcome: completed, requeued, or an error code.",
		}, []string{"outcome"}),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "tokens_generated_total",
			Help: "Tokens sampled, by jobs of every outcome.",
		}),
		promptTokens: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "prompt_tokens_total",
			Help: "Prompt tokens of the generations run, cached ones included; each choice of a job counts its prompt.",
		}),
		firstToken: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "time_to_first_token_seconds",
			Help: "Time from starting a job to its first sampled token: prompt evaluation.",
			// From a cached prompt on a tiny model to a long prompt on a big one.
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}),
		interToken: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "inter_token_latency_seconds",
			Help: "Mean time between two sampled tokens of each generation after its first.",
			// A tiny model on a GPU to a big one on CPUs with a full batch.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "queue_wait_seconds",
			Help:    "Time a job waited in its model's queue before a worker took it, first deliveries only.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}),
		decodeRate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "decode_tokens_per_second",
			Help:    "Generation rate of each job after its first token.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 to 8192
		}),
		busy: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "busy_slots",
			Help: "Slots running a job.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.jobs, m.tokens, m.promptTokens, m.firstToken, m.interToken, m.decodeRate, m.queueWait, m.busy} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register: %w", err)
			}
		}
	}
	return m, nil
}

// observe records one generation, finished or not. An unfinished one has
// only its generated IDs counted, not its timings.
func (w *Worker) observe(res infer.Result) {
	t := res.Timings
	w.metrics.tokens.Add(float64(len(res.GeneratedIDs)))
	w.metrics.promptTokens.Add(float64(len(res.PromptIDs)))
	if t.TimeToFirstToken > 0 {
		w.metrics.firstToken.Observe(t.TimeToFirstToken.Seconds())
	}
	if rate := t.DecodeTokensPerSecond(); rate > 0 {
		w.metrics.decodeRate.Observe(rate)
		w.metrics.interToken.Observe(1 / rate)
	}
}

// observeQueueWait records how long msg waited in the queue. A redelivered
// job waited for a lease to run out as well, which is not queueing.
func (w *Worker) observeQueueWait(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil || meta.NumDelivered != 1 {
		return
	}
	w.metrics.queueWait.Observe(max(time.Since(meta.Timestamp), 0).Seconds())
}

// queueInfoTimeout bounds the consumer lookup of one scrape: a scrape
// during a leader election gets no queue gauges instead of hanging.
const queueInfoTimeout = 2 * time.Second

// liveCollector reads what the worker and its queue are at scrape time:
// its state, the scheduler's sequences and preemptions, and the model's
// queue as its jobs consumer counts it.
type liveCollector struct {
	w                                   *Worker
	state, sequences, preemptions, jobs *prometheus.Desc
	kvInUse, kvCapacity                 *prometheus.Desc
}

// workerStates are the values rbee_worker_state reports, one series each.
var workerStates = []string{schemas.WorkerStarting, schemas.WorkerReady, schemas.WorkerDraining}

func newLiveCollector(w *Worker) *liveCollector {
	return &liveCollector{
		w: w,
		state: prometheus.NewDesc("rbee_worker_state",
			"The worker's state: 1 for the current one (starting, ready or draining), 0 for the others.", []string{"state"}, nil),
		sequences: prometheus.NewDesc("rbee_worker_batch_sequences",
			"Sequences submitted to the scheduler and not finished: the batch, and any waiting for KV room.", nil, nil),
		preemptions: prometheus.NewDesc("rbee_worker_kv_preemptions_total",
			"Times a running sequence gave its KV blocks back so that another could grow.", nil, nil),
		kvInUse: prometheus.NewDesc("rbee_worker_kv_blocks_in_use",
			"KV cache blocks (16 positions each) held by sequences after the scheduler's last step.", nil, nil),
		kvCapacity: prometheus.NewDesc("rbee_worker_kv_blocks_capacity",
			"KV cache blocks in the worker's pool.", nil, nil),
		jobs: prometheus.NewDesc("rbee_worker_queue_jobs",
			"Jobs of the model's queue, as its jobs consumer counts them: waiting (not yet taken) or leased (taken, not finished).", []string{"model", "state"}, nil),
	}
}

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.sequences
	ch <- c.preemptions
	ch <- c.kvInUse
	ch <- c.kvCapacity
	ch <- c.jobs
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	w := c.w
	w.mu.Lock()
	current := w.state
	w.mu.Unlock()
	for _, s := range workerStates {
		v := 0.0
		if s == current {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, v, s)
	}
	ch <- prometheus.MustNewConstMetric(c.sequences, prometheus.GaugeValue, float64(w.sched.InFlight()))
	ch <- prometheus.MustNewConstMetric(c.preemptions, prometheus.CounterValue, float64(w.sched.Preemptions()))
	inUse, capacity := w.sched.KVBlocks()
	ch <- prometheus.MustNewConstMetric(c.kvInUse, prometheus.GaugeValue, float64(inUse))
	ch <- prometheus.MustNewConstMetric(c.kvCapacity, prometheus.GaugeValue, float64(capacity))
	ctx, cancel := context.WithTimeout(context.Background(), queueInfoTimeout)
	defer cancel()
	// The lookup fetches the consumer's info: one round trip a scrape.
	cons, err := w.js.Consumer(ctx, w.cfg.Subjects.JobsStream(), w.cfg.Subjects.JobsConsumer(w.cfg.Model))
	if err != nil {
		return
	}
	info := cons.CachedInfo()
	ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(info.NumPending), w.cfg.Model, "waiting")
	ch <- prometheus.MustNewConstMetric(c.jobs, prometheus.GaugeValue, float64(info.NumAckPending), w.cfg.Model, "leased")
}

// registerLive registers the worker's scrape-time metrics with reg, unless
// reg is nil; they need the scheduler and the auditor, made after the
// other metrics.
func (w *Worker) registerLive(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{newLiveCollector(w), w.auditor.DroppedCounter("worker")} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register: %w", err)
		}
	}
	return nil
}
