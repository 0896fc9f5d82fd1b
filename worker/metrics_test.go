package worker_test

import (
	"encoding/json"
	"fmt"
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
	// The job is done and its blocks went back (the prefix cache keeps
	// none in use); the pool is slots × context / 16.
	if got := metric(t, r, "rbee_worker_kv_blocks_capacity"); got <= 0 {
		t.Errorf("rbee_worker_kv_blocks_capacity = %v, want the pool's size", got)
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

// TestKVBlocksFollowRunningJob reads the KV gauges while a long job runs
// and after it is cancelled: blocks are held while it decodes and given
// back when it ends.
func TestKVBlocksFollowRunningJob(t *testing.T) {
	b := newBed(t)
	r := b.startWorker(t, worker.Config{ContextLength: longContext})
	sub := b.submit(t, longJob("long"))
	checkFor(t, waitLong, func() error {
		inUse, capacity := metric(t, r, "rbee_worker_kv_blocks_in_use"), metric(t, r, "rbee_worker_kv_blocks_capacity")
		if inUse <= 0 || inUse > capacity {
			return fmt.Errorf("%v of %v KV blocks in use while a job runs", inUse, capacity)
		}
		if got := metric(t, r, "rbee_worker_batch_sequences"); got != 1 {
			return fmt.Errorf("%v sequences scheduled, want 1", got)
		}
		return nil
	})
	cancelJob(t, b, "long")
	drain(t, sub)
	checkFor(t, waitLong, func() error {
		if got := metric(t, r, "rbee_worker_kv_blocks_in_use"); got != 0 {
			return fmt.Errorf("%v KV blocks in use after the job ended", got)
		}
		return nil
	})
}
