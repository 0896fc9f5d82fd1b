package hive

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	restarts    *prometheus.CounterVec // model
	running     *prometheus.GaugeVec   // model
	graceful    *prometheus.CounterVec // model
	forceKilled *prometheus.CounterVec // model
	shutdown    prometheus.Histogram
	scrapeErrs  *prometheus.CounterVec // model
}

// newMetrics makes the hive's metrics and registers them with reg, unless
// reg is nil.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "worker_restarts_total",
			Help: "Worker processes started again after exiting or failing to start.",
		}, []string{"model"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "workers_running",
			Help: "Worker processes alive.",
		}, []string{"model"}),
		graceful: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "workers_graceful_shutdown_total",
			Help: "Workers that exited by themselves within the grace period after being asked to stop.",
		}, []string{"model"}),
		forceKilled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "workers_force_killed_total",
			Help: "Workers killed (SIGKILL of their process group) because they had not exited within the grace period.",
		}, []string{"model"}),
		shutdown: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "shutdown_duration_seconds",
			Help:    "Time from the start of a hive's shutdown until its last worker was gone.",
			Buckets: []float64{0.1, 0.5, 1, 5, 10, 30, 60, 120},
		}),
		scrapeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "worker_scrape_errors_total",
			Help: "Scrapes of a worker's metrics that failed (no answer in time, a bad answer); its metrics were left out of that scrape of the hive.",
		}, []string{"model"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.restarts, m.running, m.graceful, m.forceKilled, m.shutdown, m.scrapeErrs} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}

// stopsFor are the shutdown counters of model's workers.
func (m *metrics) stopsFor(model string) *stopCounters {
	return &stopCounters{graceful: m.graceful.WithLabelValues(model), forced: m.forceKilled.WithLabelValues(model)}
}
