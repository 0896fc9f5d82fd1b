package queen

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
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

// An audit event dropped from the auditor's full queue is never chained,
// so rbee audit verify cannot see it: the counter is how an operator can.
func TestAuditEventsDroppedAreCounted(t *testing.T) {
	_, nc, _, subj := bustest.Provisioned(t)
	reg := prometheus.NewRegistry()
	q, err := New(nc, Config{HTTPAddr: "127.0.0.1:0", Subjects: subj}, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	const queued = 1024 // what the auditor holds before it publishes
	for range queued + 3 {
		q.Audit(schemas.AuditEvent{Type: schemas.AuditJobAccepted, JobID: "j"})
	}
	want := `
# HELP rbee_queen_audit_events_dropped_total Audit events dropped because the auditor's queue was full (JetStream away): never chained, so rbee audit verify cannot report them.
# TYPE rbee_queen_audit_events_dropped_total counter
rbee_queen_audit_events_dropped_total 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "rbee_queen_audit_events_dropped_total"); err != nil {
		t.Fatal(err)
	}
}
