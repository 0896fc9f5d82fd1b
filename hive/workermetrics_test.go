package hive

import (
	"log/slog"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

func TestLoopbackMetricsURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:9100/metrics":       "http://127.0.0.1:9100/metrics",
		"http://127.0.0.2:9100/metrics":       "http://127.0.0.2:9100/metrics",
		"http://[::1]:9100/metrics":           "http://[::1]:9100/metrics",
		"http://localhost:9100/metrics":       "", // a name resolves to anything
		"http://10.0.0.1:9100/metrics":        "",
		"http://169.254.169.254:80/metrics":   "",
		"https://127.0.0.1:9100/metrics":      "",
		"http://127.0.0.1/metrics":            "", // no port
		"http://127.0.0.1:0/metrics":          "",
		"http://127.0.0.1:9100/admin":         "",
		"http://127.0.0.1:9100/metrics?x=1":   "",
		"http://u:p@127.0.0.1:9100/metrics":   "",
		"http://127.0.0.1:9100/metrics#frag":  "",
		"http://[::ffff:10.0.0.1]:80/metrics": "",
		"":                                    "",
		"::":                                  "",
	} {
		got, ok := loopbackMetricsURL(in)
		if got != want || ok != (want != "") {
			t.Errorf("loopbackMetricsURL(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

// Only the current process's heartbeat names the URL the hive scrapes, and
// only a loopback one; a process that replaced it starts with none.
func TestNoteMetricsURL(t *testing.T) {
	h := &Hive{log: slog.New(slog.DiscardHandler)}
	p := &proc{w: &worker{status: WorkerStatus{ID: "w", PID: 42, State: StateRunning}}}
	beat := func(pid int, url string) {
		h.noteMetricsURL(p, schemas.WorkerHeartbeat{WorkerID: "w", PID: pid, MetricsURL: url})
	}
	const good = "http://127.0.0.1:9100/metrics"
	beat(7, good) // another process's, under the worker's ID
	if p.metricsURL != "" {
		t.Fatalf("took %q from a heartbeat of another PID", p.metricsURL)
	}
	beat(42, good)
	if p.metricsURL != good || p.metricsPID != 42 {
		t.Fatalf("URL %q of pid %d, want %q of 42", p.metricsURL, p.metricsPID, good)
	}
	beat(42, "http://10.0.0.1:80/metrics")
	beat(42, "")
	beat(8, "http://127.0.0.1:1/metrics")
	if p.metricsURL != good {
		t.Errorf("URL %q after forged heartbeats, want the process's %q", p.metricsURL, good)
	}
	p.w.status.PID = 43 // restarted: the old URL is not the new process's
	beat(43, "http://10.0.0.1:80/metrics")
	if p.metricsURL != "" || p.metricsPID != 43 {
		t.Errorf("URL %q of pid %d after the new process told an off-loopback one, want none", p.metricsURL, p.metricsPID)
	}
}
