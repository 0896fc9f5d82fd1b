package hive

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsLint gives every hive metric a series and runs the
// Prometheus linter over them: names, units, help.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := newPlacementMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.restarts.WithLabelValues("m").Inc()
	m.running.WithLabelValues("m").Set(1)
	m.graceful.WithLabelValues("m").Inc()
	m.forceKilled.WithLabelValues("m").Inc()
	m.shutdown.Observe(1)
	m.scrapeErrs.WithLabelValues("m").Inc()
	pm.rejected.WithLabelValues("insufficient_ram").Inc()
	pm.evictions.Inc()
	pm.unloads.Inc()
	if n := testutil.CollectAndCount(reg); n != 9 {
		t.Fatalf("%d series, want 9", n)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	if _, err := newMetrics(reg); err == nil {
		t.Error("registering the hive's metrics twice succeeded")
	}
}
