package worker

import (
	"fmt"
	"github.com/rbee-dev/rbee/schemas"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/infer"
)

// Job outcomes besides the error codes.
const (
	outcomeCompleted = schemas.OutcomeCompleted
	outcomeRequeued  = schemas.OutcomeRequeued
	outcomeTakenOver = schemas.OutcomeTakenOver
)

type metrics struct {
	jobs       *prometheus.CounterVec // outcome
	tokens     prometheus.Counter
	firstToken prometheus.Histogram
	decodeRate prometheus.Histogram
	busy       prometheus.Gauge
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
		firstToken: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rbee", Subsystem: "worker", Name: "time_to_first_token_seconds",
			Help: "Time from starting a job to its first sampled token: prompt evaluation.",
			// From a cached prompt on a tiny model to a long prompt on a big one.
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
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
		for _, c := range []prometheus.Collector{m.jobs, m.tokens, m.firstToken, m.decodeRate, m.busy} {
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
	if t.TimeToFirstToken > 0 {
		w.metrics.firstToken.Observe(t.TimeToFirstToken.Seconds())
	}
	if rate := t.DecodeTokensPerSecond(); rate > 0 {
		w.metrics.decodeRate.Observe(rate)
	}
}
