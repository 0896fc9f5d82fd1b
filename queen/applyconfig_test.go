package queen

import (
	"net/http"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// ApplyConfig changes the default max tokens of the next job and the queue
// limit of the work queue while the queen serves; a bad config changes
// nothing.
func TestApplyConfig(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, func(j *fakeJob) {
		j.end(schemas.StopReasonLength, schemas.Usage{})
	})
	next := f.q.cfg
	next.DefaultMaxTokens = 7
	next.IdleTimeout = 3 * time.Second
	next.Provisioning = bus.Provisioning{JobsMaxPerModel: 9}
	next.HTTPAddr = "127.0.0.1:1" // not live: ignored
	if err := f.q.ApplyConfig(f.ctx(), next); err != nil {
		t.Fatal(err)
	}
	resp, body := f.post("/v1/completions", `{"model":"stories260K","prompt":"Once"}`)
	if j := recvJob(t, taken); j.Job.MaxTokens != 7 || resp.StatusCode != http.StatusOK {
		t.Errorf("job max tokens %d (status %d %v), want the applied 7", j.Job.MaxTokens, resp.StatusCode, body)
	}
	st, err := f.js.Stream(f.ctx(), f.subj.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxMsgsPerSubject; got != 9 {
		t.Errorf("jobs per model %d, want 9", got)
	}
	if live := f.q.live(); live.IdleTimeout != 3*time.Second || live.HTTPAddr != f.q.cfg.HTTPAddr {
		t.Errorf("live config %+v", live)
	}

	bad := next
	bad.DefaultMaxTokens = -1
	if err := f.q.ApplyConfig(f.ctx(), bad); err == nil {
		t.Error("a negative default max tokens was applied")
	}
	if f.q.live().DefaultMaxTokens != 7 {
		t.Errorf("a refused config changed the default max tokens to %d", f.q.live().DefaultMaxTokens)
	}
}
