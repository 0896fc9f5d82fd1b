package hive

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	restarts *prometheus.CounterVec // model
	running  *prometheus.GaugeVec   // model
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
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.restarts, m.running} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}
