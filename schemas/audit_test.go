package schemas

import (
	"strings"
	"testing"
	"time"
)

func TestAuditEventValidate(t *testing.T) {
	ok := validAuditEvent()
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid event: %v", err)
	}
	started := AuditEvent{Type: AuditWorkerStarted, Time: time.Now(), WorkerID: "w-1", PID: 42}
	if err := started.Validate(); err != nil {
		t.Fatalf("worker.started: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*AuditEvent)
		want string
	}{
		{"unknown type", func(e *AuditEvent) { e.Type = "job.exploded" }, "not known"},
		{"job without id", func(e *AuditEvent) { e.JobID = "" }, "job_id"},
		{"job without outcome", func(e *AuditEvent) { e.Outcome = "" }, "outcome"},
		{"worker without id", func(e *AuditEvent) { e.Type, e.WorkerID = AuditWorkerExited, "" }, "worker_id"},
		{"no time", func(e *AuditEvent) { e.Time = time.Time{} }, "time"},
	} {
		e := validAuditEvent()
		c.edit(&e)
		err := e.Validate()
		if err == nil || CodeOf(err) != CodeInvalidRequest || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want invalid_request mentioning %q", c.name, err, c.want)
		}
	}
}
