package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/infer/tokenizer"
)

// rbee bench --quick prints its table and writes JSON that parses, with a
// row for every section. No figure is checked: they depend on the machine.
func TestBenchQuick(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "bench.json")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, rbeeBin, "bench", "--quick", "--out", out, "--cache", filepath.Join(dir, "cache"))
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // it stops its rbee up
	cmd.WaitDelay = time.Minute
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("rbee bench --quick: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr.String())
	}
	table := string(stdout)
	for _, want := range []string{"CPU:", "features:", "FIGURE", "VALUE", "memory read bandwidth", "stories260K decode", "rbee up stories260K"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		System struct {
			CPUModel   string `json:"cpu_model"`
			GOMAXPROCS int    `json:"gomaxprocs"`
			GoVersion  string `json:"go_version"`
			Commit     string `json:"git_commit"`
		} `json:"system"`
		Figures []struct {
			ID    string  `json:"id"`
			Value float64 `json:"value"`
		} `json:"figures"`
		Serve struct {
			WorkerPIDs map[string]int `json:"worker_pids"`
		} `json:"serve"`
		Bus struct {
			WorkerPIDs []int `json:"worker_pids"`
			NATSSplit  struct {
				Queued float64 `json:"queued_p50_ms"`
				Worker float64 `json:"worker_p50_ms"`
				Engine float64 `json:"engine_p50_ms"`
			} `json:"nats_split"`
			Jobs []struct {
				Via    string `json:"via"`
				Jobs   int    `json:"jobs"`
				Errors int    `json:"errors"`
			} `json:"jobs"`
		} `json:"bus"`
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("bench.json: %v\n%s", err, b)
	}
	if rep.System.CPUModel == "" || rep.System.GOMAXPROCS == 0 || rep.System.GoVersion == "" || rep.System.Commit == "" {
		t.Errorf("system %+v", rep.System)
	}
	if len(rep.Errors) > 0 {
		t.Errorf("errors %q", rep.Errors)
	}
	ids := map[string]bool{}
	for _, f := range rep.Figures {
		ids[f.ID] = true
	}
	want := []string{"membw.1t", "membw.2t", "engine.tiny-Q8_0.prompt", "engine.tiny-Q8_0.decode",
		"engine.tiny-Q8_0.bandwidth", "engine.stories260K.prompt", "engine.stories260K.decode",
		"engine.stories260K.bandwidth", "concurrent.1", "concurrent.2", "concurrent.match",
		"serve.tiny-Q8_0.c1.tps", "serve.tiny-Q8_0.c2.ttft_p50", "serve.tiny-Q8_0.c2.gain", "serve.tiny-Q8_0.c2.match",
		"serve.tiny-Q8_0.worker_rss", "serve.stories260K.c1.tps", "serve.stories260K.c2.ttft_p99",
		"bus.stories260K.http_ttft_p50", "bus.stories260K.engine_ttft_p50", "bus.stories260K.overhead_p50",
		"bus.nats_rtt_p50", "bus.stories260K.nats.jobs_per_second", "bus.stories260K.nats.errors",
		"bus.stories260K.http.jobs_per_second", "bus.stories260K.nats_queued_p50", "bus.stories260K.nats_worker_p50",
		"bus.stories260K.nats_rest_p50"}
	for _, id := range want {
		if !ids[id] {
			t.Errorf("no figure %s in %s", id, b)
		}
	}
	// The split of a NATS job's first token comes from its end event's
	// timings: the worker's part holds the engine's.
	if split := rep.Bus.NATSSplit; split.Queued <= 0 || split.Engine <= 0 || split.Worker < split.Engine {
		t.Errorf("first token split %+v", split)
	}
	// The sustained runs did jobs, and none failed.
	if len(rep.Bus.Jobs) != 2 {
		t.Errorf("bus runs %+v, want nats and http", rep.Bus.Jobs)
	}
	for _, j := range rep.Bus.Jobs {
		if j.Jobs == 0 || j.Errors != 0 {
			t.Errorf("bus run %+v", j)
		}
	}
	// Every worker either rbee up started is gone.
	for _, pid := range append(slices.Collect(maps.Values(rep.Serve.WorkerPIDs)), rep.Bus.WorkerPIDs...) {
		if p, err := os.FindProcess(pid); err == nil && p.Signal(syscall.Signal(0)) == nil {
			t.Errorf("worker %d still runs", pid)
		}
	}
	if len(rep.Serve.WorkerPIDs) == 0 || len(rep.Bus.WorkerPIDs) == 0 {
		t.Error("no worker PIDs recorded")
	}
}

// Prompts have exactly the asked number of tokens, BOS included, for the
// bundled model's small vocabulary and for Llama's.
func TestExactPrompt(t *testing.T) {
	m, err := infer.Load(modelPath, infer.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	f, err := gguf.Open("../../infer/tokenizer/testdata/ggml-vocab-llama-spm.gguf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	llama, err := tokenizer.FromGGUF(f)
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]*tokenizer.Tokenizer{"stories260K": m.Tokenizer(), "llama-spm": llama} {
		for _, n := range []int{2, 16, 63, 64, 65, 200} {
			for variant := range 4 {
				p, err := exactPrompt(tok, n, variant)
				if err != nil {
					t.Errorf("%s: %d tokens, variant %d: %v", name, n, variant, err)
					continue
				}
				ids, _ := tok.Encode(p, true, false)
				if len(ids) != n {
					t.Errorf("%s: prompt %q has %d tokens, want %d", name, p, len(ids), n)
				}
			}
		}
	}
}

func TestAggregateRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		var ts []time.Time
		for _, v := range ms {
			ts = append(ts, t0.Add(time.Duration(v)*time.Millisecond))
		}
		return ts
	}
	// Two sequences overlapping from 100 to 1000 ms, each a token per 100 ms:
	// 9 + 9 tokens in the window (100, 1000].
	seqs := []seqOutput{
		{Times: at(0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100)},
		{Times: at(100, 200, 300, 400, 500, 600, 700, 800, 900, 1000)},
	}
	window, wall := aggregateRate(seqs)
	if fmt.Sprintf("%.1f", window) != "20.0" {
		t.Errorf("window rate %v, want 20", window)
	}
	if fmt.Sprintf("%.1f", wall) != "19.1" { // 21 tokens after the first over 1.1 s
		t.Errorf("wall rate %v, want 19.1", wall)
	}
	// No overlap: the wall rate stands in.
	seqs = []seqOutput{{Times: at(0, 100)}, {Times: at(200, 300)}}
	if window, wall := aggregateRate(seqs); window != wall {
		t.Errorf("without overlap window %v != wall %v", window, wall)
	}
	if window, wall := aggregateRate(nil); window != 0 || wall != 0 {
		t.Errorf("no sequences: %v %v", window, wall)
	}
}

func TestPercentile(t *testing.T) {
	xs := []float64{5, 1, 4, 2, 3}
	for _, c := range []struct{ p, want float64 }{{0.5, 3}, {0.99, 5}, {0.2, 1}, {0.21, 2}} {
		if got := percentile(xs, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if percentile(nil, 0.5) != 0 {
		t.Error("percentile of nothing")
	}
}

// A target is met from its side: at least its value, or at most it; the
// JSON says which, and the table shows it.
func TestBenchTargets(t *testing.T) {
	r := &benchReport{targets: map[string]benchTarget{"low": atMost(1), "high": atLeast(3500)}}
	r.add("low", "overhead under", 0.8, "ms")
	r.add("low", "overhead over", 1.2, "ms")
	r.add("high", "rate over", 3600, "jobs/s")
	r.add("high", "rate under", 900, "jobs/s")
	r.add("none", "no target", 5, "ms")
	for i, want := range []struct {
		met   bool
		bound string
	}{{true, "at_most"}, {false, "at_most"}, {true, "at_least"}, {false, "at_least"}} {
		f := r.Figures[i]
		if f.Met == nil || *f.Met != want.met || f.Bound != want.bound {
			t.Errorf("%s: met %v bound %q, want %v %q", f.Name, f.Met, f.Bound, want.met, want.bound)
		}
	}
	if f := r.Figures[4]; f.Target != nil || f.Met != nil || f.Bound != "" {
		t.Errorf("a figure without a target got one: %+v", f)
	}
	var table strings.Builder
	if err := r.writeTable(&table); err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	for line := range strings.Lines(table.String()) {
		f := strings.Fields(line)
		if len(f) >= 3 {
			rows[f[0]+" "+f[1]] = strings.Join(f[2:], " ")
		}
	}
	for name, want := range map[string]string{"overhead under": "0.80 ms <= 1.00 yes", "overhead over": "1.20 ms <= 1.00 no",
		"rate over": "3600 jobs/s >= 3500 yes", "rate under": "900 jobs/s >= 3500 no", "no target": "5.00 ms"} {
		if rows[name] != want {
			t.Errorf("row %q reads %q, want %q:\n%s", name, rows[name], want, table.String())
		}
	}
}
