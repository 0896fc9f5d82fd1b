package queen

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLint gives every queen metric a series and runs the
// Prometheus linter over them: names, units, help.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.requests.WithLabelValues("/v1/chat/completions", "200").Inc()
	m.firstToken.WithLabelValues("m").Observe(0.1)
	m.tokens.WithLabelValues("m").Inc()
	m.jobsInFlight.Inc()
	m.jobs.WithLabelValues("m", "stop").Inc()
	m.forged.Inc()
	if n := testutil.CollectAndCount(reg); n != 6 {
		t.Fatalf("%d series, want 6", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}
