package schemas

import (
	"strings"
	"testing"
)

func TestWorkerProgressValidate(t *testing.T) {
	ready := validWorkerProgress()
	ready.Phase, ready.DoneBytes, ready.LoadMillis = LoadReady, ready.TotalBytes, 1200
	for _, p := range []WorkerProgress{validWorkerProgress(), failedWorkerProgress(), ready} {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	for _, tc := range []struct {
		change func(*WorkerProgress)
		want   string
	}{
		{func(p *WorkerProgress) { p.WorkerID = "w.1" }, "worker_id"},
		{func(p *WorkerProgress) { p.HiveID = "h 1" }, "hive_id"},
		{func(p *WorkerProgress) { p.Model = "" }, "model"},
		{func(p *WorkerProgress) { p.Phase = "done" }, "phase"},
		{func(p *WorkerProgress) { p.DoneBytes = p.TotalBytes + 1 }, "bytes loaded"},
		{func(p *WorkerProgress) { p.DoneBytes = -1 }, "bytes loaded"},
		{func(p *WorkerProgress) { p.LoadMillis = -1 }, "load_ms"},
		{func(p *WorkerProgress) { p.Phase = LoadFailed }, "error is missing"},
	} {
		p := validWorkerProgress()
		tc.change(&p)
		err := p.Validate()
		if err == nil || CodeOf(err) != CodeInvalidRequest || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want invalid_request about %q", p, err, tc.want)
		}
	}
}
