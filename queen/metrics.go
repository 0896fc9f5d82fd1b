package queen

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests     *prometheus.CounterVec   // endpoint, code
	firstToken   *prometheus.HistogramVec // model
	tokens       *prometheus.CounterVec   // model
	jobsInFlight prometheus.Gauge
	jobs         *prometheus.CounterVec // model, result
	forged       prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "queen", Name: "requests_total",
			Help: "Requests answered, by endpoint and status code (micro errors map to the code's HTTP status).",
		}, []string{"endpoint", "code"}),
		firstToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "rbee", Subsystem: "queen", Name: "time_to_first_token_seconds",
			Help: "Time from admitting an HTTP job to its first token, queueing included.",
			// Queueing can take minutes; a warm worker answers in milliseconds.
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"model"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "queen", Name: "tokens_streamed_total",
			Help: "Token events relayed to HTTP clients.",
		}, []string{"model"}),
		jobsInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "rbee", Subsystem: "queen", Name: "jobs_in_flight",
			Help: "HTTP jobs queued or streaming.",
		}),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "queen", Name: "jobs_finished_total",
			Help: "HTTP jobs finished, by model and result (a stop reason or an error code).",
		}, []string{"model", "result"}),
		forged: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "queen", Name: "events_forged_total",
			Help: "Messages on the events subject of a job the queen follows that the job's key did not sign: ignored, never relayed.",
		}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.firstToken, m.tokens, m.jobsInFlight, m.jobs, m.forged} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}
