package worker_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

// TestJobFillsMetrics runs one job and reads what an operator's dashboard
// reads: the prompt and generated tokens, the latency histograms, the
// queue wait, the worker's state and its queue; every metric passes the
// Prometheus linter.
func TestJobFillsMetrics(t *testing.T) {
	b := newBed(t)
	var ref struct {
		PromptIDs []int32 `json:"prompt_ids"`
	}
	data, err := os.ReadFile("../infer/testdata/reference/stories260K-once-upon-a-time-64.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	r := b.startWorker(t, worker.Config{})
	drain(t, b.submit(t, schemas.Job{ID: "job-1", Prompt: "Once upon a time", MaxTokens: 16, Sampling: greedy()}))
	b.waitQueueEmpty(t)

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"rbee_worker_prompt_tokens_total", nil, float64(len(ref.PromptIDs))},
		{"rbee_worker_tokens_generated_total", nil, 16},
		{"rbee_worker_time_to_first_token_seconds", nil, 1},
		{"rbee_worker_inter_token_latency_seconds", nil, 1},
		{"rbee_worker_queue_wait_seconds", nil, 1},
		{"rbee_worker_jobs_total", []string{"outcome", "completed"}, 1},
		{"rbee_worker_state", []string{"state", schemas.WorkerReady}, 1},
		{"rbee_worker_state", []string{"state", schemas.WorkerDraining}, 0},
		{"rbee_worker_batch_sequences", nil, 0},
		{"rbee_worker_queue_jobs", []string{"model", modelName, "state", "waiting"}, 0},
	} {
		if got := metric(t, r, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if n, err := testutil.GatherAndCount(r.reg, "rbee_worker_queue_jobs"); err != nil || n != 2 {
		t.Errorf("rbee_worker_queue_jobs has %d series (%v), want waiting and leased", n, err)
	}
	problems, err := testutil.GatherAndLint(r.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}
