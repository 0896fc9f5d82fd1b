package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// rbeeOut runs an rbee client command and returns its standard output,
// failing the test when it fails.
func rbeeOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := rbeeTry(args...)
	if err != nil {
		t.Fatalf("rbee %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func rbeeTry(args ...string) (string, error) {
	cmd := exec.Command(rbeeBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// rbeeJSON runs a client command with --json and decodes what it prints.
func rbeeJSON[T any](t *testing.T, args ...string) (T, error) {
	t.Helper()
	var v T
	out, err := rbeeTry(append(args, "--json")...)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		return v, fmt.Errorf("decode %q: %w", out, err)
	}
	return v, nil
}

// errorAtEnd reads a completion stream to its [DONE] and returns the text
// and the error chunk before [DONE], if any.
func (r *sseReader) errorAtEnd() (string, *schemas.Error) {
	r.t.Helper()
	var text strings.Builder
	var last *schemas.Error
	for r.sc.Scan() {
		data, ok := strings.CutPrefix(r.sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return text.String(), last
		}
		var chunk struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Error *schemas.Error `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			r.t.Fatalf("chunk %q: %v", data, err)
		}
		if last != nil {
			r.t.Fatalf("a chunk after the error chunk: %q", data)
		}
		last = chunk.Error
		for _, c := range chunk.Choices {
			text.WriteString(c.Text)
		}
	}
	r.t.Fatalf("the stream ended without [DONE]: %v", r.sc.Err())
	return "", nil
}

// The registry and a job's record, as an operator reads them with the rbee
// CLI: a hive and its worker are listed while they heartbeat and leave
// every list within the TTL once they stop; a job's outcome is looked up
// by its ID; a cancel by ID stops a running job.
func TestRegistryCommands(t *testing.T) {
	srv := bustest.RunServer(t)
	url := srv.ClientURL()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	const ttl = 4 * time.Second
	start(t, "queen", "--server", url, "--http", httpAddr, "--worker-ttl", ttl.String(), "--hive-ttl", ttl.String())
	hiveCmd := start(t, "hive", "--server", url, "--id", "h-reg", "--serve", "stories260K="+modelPath,
		"--ctx", "4096", "--threads", "1", "--heartbeat-interval", "500ms")
	nats := []string{"--server", url}

	var worker schemas.WorkerHeartbeat
	poll(t, 60*time.Second, func() error {
		ws, err := rbeeJSON[[]schemas.WorkerHeartbeat](t, append([]string{"workers", "ls"}, nats...)...)
		if err != nil {
			return err
		}
		if len(ws) != 1 || ws[0].HiveID != "h-reg" || ws[0].State != schemas.WorkerReady {
			return fmt.Errorf("workers %+v, want one ready worker of h-reg", ws)
		}
		worker = ws[0]
		hs, err := rbeeJSON[[]schemas.HiveHeartbeat](t, append([]string{"hives", "ls"}, nats...)...)
		if err != nil {
			return err
		}
		if len(hs) != 1 || hs[0].HiveID != "h-reg" || !slices.Equal(hs[0].Workers, []string{worker.WorkerID}) {
			return fmt.Errorf("hives %+v, want h-reg running %s", hs, worker.WorkerID)
		}
		return nil
	})
	if table := rbeeOut(t, append([]string{"workers", "ls"}, nats...)...); !strings.Contains(table, worker.WorkerID) || !strings.Contains(table, "ready") {
		t.Errorf("workers ls:\n%s", table)
	}
	if table := rbeeOut(t, append([]string{"hives", "ls"}, nats...)...); !strings.Contains(table, "h-reg") {
		t.Errorf("hives ls:\n%s", table)
	}

	// A finished job's record.
	resp := postJSON(t, base+"/v1/completions", map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0})
	var done struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&done); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("completion: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	id := resp.Header.Get("X-Rbee-Job-Id")
	st, err := rbeeJSON[schemas.JobStatus](t, append([]string{"jobs", "show", id}, nats...)...)
	if err != nil || st.State != schemas.JobDone || st.Text != done.Choices[0].Text || st.WorkerID != worker.WorkerID ||
		st.Usage == nil || st.Usage.CompletionTokens != 12 {
		t.Errorf("jobs show %s: %+v, %v; want done with %q", id, st, err, done.Choices[0].Text)
	}
	if table := rbeeOut(t, append([]string{"jobs", "show", id}, nats...)...); !strings.Contains(table, "done") {
		t.Errorf("jobs show:\n%s", table)
	}
	if _, err := rbeeTry(append([]string{"jobs", "show", "no-such-job"}, nats...)...); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("jobs show of an unknown job: %v", err)
	}

	// A running job cancelled by ID stops, and its record says so.
	b := &failoverBed{base: base}
	long := b.stream(t, map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0})
	long.readN(2)
	longID := long.resp.Header.Get("X-Rbee-Job-Id")
	if out := rbeeOut(t, append([]string{"jobs", "cancel", longID}, nats...)...); !strings.Contains(out, longID) {
		t.Errorf("jobs cancel: %q", out)
	}
	if _, e := long.errorAtEnd(); e == nil || e.Code != schemas.CodeCancelled {
		t.Errorf("cancelled stream ended with %+v, want cancelled", e)
	}
	poll(t, 10*time.Second, func() error {
		st, err := rbeeJSON[schemas.JobStatus](t, append([]string{"jobs", "show", longID}, nats...)...)
		if err != nil || st.State != schemas.JobCancelled || st.Tokens >= 3000 {
			return fmt.Errorf("cancelled job's record %+v, %v", st, err)
		}
		return nil
	})

	// A hive and worker that stop heartbeating leave the registry, the
	// models list and placement within the TTL, and come back after.
	for _, pid := range []int{hiveCmd.Process.Pid, worker.PID} {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			for _, pid := range []int{worker.PID, hiveCmd.Process.Pid} {
				_ = syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	}
	t.Cleanup(resume)
	stopped := time.Now()
	poll(t, ttl+5*time.Second, func() error {
		ws, err := rbeeJSON[[]schemas.WorkerHeartbeat](t, append([]string{"workers", "ls"}, nats...)...)
		if err != nil || len(ws) != 0 {
			return fmt.Errorf("workers %+v, %v; want none", ws, err)
		}
		hs, err := rbeeJSON[[]schemas.HiveHeartbeat](t, append([]string{"hives", "ls"}, nats...)...)
		if err != nil || len(hs) != 0 {
			return fmt.Errorf("hives %+v, %v; want none", hs, err)
		}
		if models := getBody(t, base+"/v1/models"); strings.Contains(models, "stories260K") {
			return fmt.Errorf("models still lists the stopped worker's model: %s", models)
		}
		return nil
	})
	t.Logf("gone from the registry %v after the stop (TTL %v)", time.Since(stopped).Round(100*time.Millisecond), ttl)
	resp = postJSON(t, base+"/v1/completions", map[string]any{"model": "stories260K", "prompt": "x", "max_tokens": 2})
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusNotFound {
		t.Errorf("a request with no live worker: status %d, want 503 or 404 at once", resp.StatusCode)
	}
	resume()
	poll(t, 30*time.Second, func() error {
		ws, err := rbeeJSON[[]schemas.WorkerHeartbeat](t, append([]string{"workers", "ls"}, nats...)...)
		if err != nil || len(ws) != 1 {
			return fmt.Errorf("workers %+v, %v; want the resumed one", ws, err)
		}
		hs, err := rbeeJSON[[]schemas.HiveHeartbeat](t, append([]string{"hives", "ls"}, nats...)...)
		if err != nil || len(hs) != 1 {
			return fmt.Errorf("hives %+v, %v; want the resumed one", hs, err)
		}
		return nil
	})
	stop(t, hiveCmd, syscall.SIGTERM)
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A job whose workers die on it, as often as the consumer allows, is
// dead-lettered: its client gets dead_lettered and [DONE], rbee jobs dlq ls
// lists it with the job as queued, and the next job runs.
func TestPoisonJobIsDeadLettered(t *testing.T) {
	srv := bustest.RunServer(t)
	url := srv.ClientURL()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	start(t, "queen", "--server", url, "--http", httpAddr)
	nats := []string{"--server", url}
	workers := map[string]*exec.Cmd{}
	for _, id := range []string{"dl-1", "dl-2"} {
		workers[id] = start(t, "worker", "--server", url, "--model-name", "stories260K", "--model", modelPath,
			"--worker-id", id, "--ctx", "4096", "--threads", "1", "--ack-wait", failoverLease.String(), "--max-attempts", "1")
	}
	poll(t, 60*time.Second, func() error {
		ws, err := rbeeJSON[[]schemas.WorkerHeartbeat](t, append([]string{"workers", "ls"}, nats...)...)
		if err != nil || len(ws) != 2 {
			return fmt.Errorf("workers %+v, %v; want 2", ws, err)
		}
		return nil
	})
	b := &failoverBed{base: base}
	r := b.stream(t, map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0})
	r.readN(2)
	id := r.resp.Header.Get("X-Rbee-Job-Id")
	var holder string
	poll(t, 10*time.Second, func() error {
		st, err := rbeeJSON[schemas.JobStatus](t, append([]string{"jobs", "show", id}, nats...)...)
		if err != nil || workers[st.WorkerID] == nil {
			return fmt.Errorf("job %s: %+v, %v", id, st, err)
		}
		holder = st.WorkerID
		return nil
	})
	if err := workers[holder].Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = workers[holder].Wait()

	if _, e := r.errorAtEnd(); e == nil || e.Code != schemas.CodeDeadLettered || e.Retryable {
		t.Fatalf("stream ended with %+v, want dead_lettered, not retryable", e)
	}
	type deadLetter struct {
		JobID      string          `json:"job_id"`
		Model      string          `json:"model"`
		Code       schemas.Code    `json:"code"`
		Deliveries int             `json:"deliveries"`
		Worker     string          `json:"worker"`
		Job        json.RawMessage `json:"job"`
	}
	dead, err := rbeeJSON[[]deadLetter](t, append([]string{"jobs", "dlq", "ls"}, nats...)...)
	if err != nil || len(dead) != 1 {
		t.Fatalf("jobs dlq ls: %+v, %v", dead, err)
	}
	var job schemas.Job
	if d := dead[0]; d.JobID != id || d.Model != "stories260K" || d.Code != schemas.CodeDeadLettered || d.Deliveries != 2 ||
		d.Worker == holder || json.Unmarshal(d.Job, &job) != nil || job.MaxTokens != 3000 {
		t.Errorf("dead letter %+v", d)
	}
	if job.EventKey != "[redacted]" {
		t.Errorf("the dead letter shows the job's event key as %q, want it masked", string(job.EventKey))
	}
	if table := rbeeOut(t, append([]string{"jobs", "dlq", "ls"}, nats...)...); !strings.Contains(table, id) || !strings.Contains(table, "dead_lettered") {
		t.Errorf("jobs dlq ls:\n%s", table)
	}
	st, err := rbeeJSON[schemas.JobStatus](t, append([]string{"jobs", "show", id}, nats...)...)
	if err != nil || st.State != schemas.JobFailed || st.Error == nil || st.Error.Code != schemas.CodeDeadLettered {
		t.Errorf("dead-lettered job's record %+v, %v", st, err)
	}
	// The surviving worker serves the next job.
	resp := postJSON(t, base+"/v1/completions", map[string]any{"model": "stories260K", "prompt": "x", "max_tokens": 4})
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("next job: status %d", resp.StatusCode)
	}
}

// A worker or hive stopped while it waits for provisioning exits cleanly.
func TestStoppedWhileWaitingForProvisioning(t *testing.T) {
	srv := bustest.RunServer(t)
	for _, args := range [][]string{
		{"worker", "--server", srv.ClientURL(), "--model-name", "stories260K", "--model", modelPath, "--threads", "1"},
		{"hive", "--server", srv.ClientURL(), "--serve", "stories260K=" + modelPath},
	} {
		cmd := start(t, args...)
		poll(t, 30*time.Second, func() error {
			conns, err := srv.Connz(&server.ConnzOptions{})
			if err != nil {
				return err
			}
			for _, c := range conns.Conns {
				if c.Name == "rbee-"+args[0] {
					return nil
				}
			}
			return fmt.Errorf("no rbee-%s connected yet", args[0])
		})
		stop(t, cmd, syscall.SIGTERM)
	}
}
