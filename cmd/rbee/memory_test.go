package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// residentBytes reads a process's resident set size from /proc.
func residentBytes(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc to read memory from: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc status")
	return 0
}

// TestWorkerResidentMemory: a worker that has served a full batch holds no
// more than its model file (mapped, never copied), its KV pool and 64 MiB
// for everything else.
func TestWorkerResidentMemory(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny-q8_0.gguf")
	synth := start(t, "model", "synth", "--shape", "tiny", "--type", "Q8_0",
		"--vocab", "../../infer/tokenizer/testdata/ggml-vocab-llama-spm.gguf", "-o", model)
	if err := synth.Wait(); err != nil {
		t.Fatalf("rbee model synth: %v", err)
	}
	fi, err := os.Stat(model)
	if err != nil {
		t.Fatal(err)
	}
	// tiny: 2 layers, 2 KV heads of 64: keys and values of 512 bytes per position.
	const kvTokens, kvBytesPerToken = 8192, 2 * 2 * 128 * 2
	srv := bustest.RunServer(t)
	nc, js := bustest.Connect(t, srv)
	subj, _ := schemas.NewSubjects("")
	// No queen here: provision the way an operator would without one.
	if out, err := exec.Command(rbeeBin, "provision", "--server", srv.ClientURL()).CombinedOutput(); err != nil ||
		!strings.Contains(string(out), "provisioned the streams "+subj.JobsStream()) {
		t.Fatalf("rbee provision: %v\n%s", err, out)
	}
	worker := start(t, "worker", "--server", srv.ClientURL(), "--model-name", "tiny", "--model", model,
		"--worker-id", "mem-1", "--slots", "4", "--ctx", "512", "--kv-tokens", strconv.Itoa(kvTokens), "--threads", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	poll(t, 60*time.Second, func() error {
		ws, err := liveWorkers(ctx, js, subj)
		if err != nil || len(ws) != 1 {
			return fmt.Errorf("%d ready workers (%v), want 1", len(ws), err)
		}
		return nil
	})

	const jobs = 8
	msgs := make([]chan *nats.Msg, jobs)
	for i := range jobs {
		msgs[i] = make(chan *nats.Msg, 1024)
		stream := subj.JobEvents("mem", fmt.Sprintf("mem-%d", i))
		sub, err := nc.ChanSubscribe(stream, msgs[i])
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		job := fmt.Sprintf(`{"id":"mem-%d","model":"tiny","stream":%q,"prompt":"Once upon a time there was number %d","max_tokens":400,"temperature":0}`,
			i, stream, i)
		if _, err := js.Publish(ctx, subj.Jobs("tiny"), []byte(job), jetstream.WithMsgID(fmt.Sprintf("mem-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := range jobs {
		collectEvents(t, msgs[i])
	}
	rss := residentBytes(t, worker.Process.Pid)
	limit := fi.Size() + kvTokens*kvBytesPerToken + 64<<20
	t.Logf("worker resident %.1f MiB: model %.1f MiB, KV pool %.1f MiB, limit %.1f MiB",
		float64(rss)/(1<<20), float64(fi.Size())/(1<<20), float64(kvTokens*kvBytesPerToken)/(1<<20), float64(limit)/(1<<20))
	if rss > limit {
		t.Errorf("worker resident memory %d bytes, more than model + KV pool + 64 MiB = %d", rss, limit)
	}
	stop(t, worker, syscall.SIGTERM)
}
