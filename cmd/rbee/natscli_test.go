package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/schemas"
)

// natsCLI is the pinned nats CLI: on PATH, in GOPATH/bin, or installed
// there now. A machine that cannot install it fails the test rather than
// skipping the README's examples.
func natsCLI(t *testing.T) string {
	t.Helper()
	if bin, err := exec.LookPath("nats"); err == nil {
		return bin
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err != nil {
		t.Fatalf("go env GOPATH: %v", err)
	}
	bin := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "nats")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if out, err := exec.Command("go", "install", "github.com/nats-io/natscli/nats@v0.5.0").CombinedOutput(); err != nil {
		t.Fatalf("install the nats CLI: %v\n%s", err, out)
	}
	return bin
}

// The README's nats CLI examples, run as written against rbee up.
func TestReadmeNatsExamples(t *testing.T) {
	natsBin := natsCLI(t)
	up := startUp(t)
	defer stop(t, up.cmd, syscall.SIGTERM)
	natsURL := up.natsURL
	// The README's examples use the contexts rbee up wrote: the client's
	// and the operator's.
	natsAs := func(name string) func(ctx context.Context, args ...string) *exec.Cmd {
		return func(ctx context.Context, args ...string) *exec.Cmd {
			cmd := exec.CommandContext(ctx, natsBin, append([]string{"--context", name}, args...)...)
			cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
				return strings.HasPrefix(kv, "NATS_URL=") || strings.HasPrefix(kv, "NATS_CONTEXT=")
			})
			return cmd
		}
	}
	nats, operator := natsAs("rbee"), natsAs("rbee-operator")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	out, err := nats(ctx, "req", "rbee.v2.infer", `{"model":"stories260K","prompt":"Once upon a time","max_tokens":32}`, "--wait-for-empty").CombinedOutput()
	if err != nil || strings.Count(string(out), `"type":"token"`) < 32 || !strings.Contains(string(out), `"type":"end"`) {
		t.Errorf("nats req: %v\n%s", err, out)
	}

	// Ctrl-C on nats req cancels the job: the worker stops well before
	// its 3000 tokens, and the job's record says cancelled.
	req := nats(ctx, "req", "rbee.v2.infer", `{"model":"stories260K","prompt":"Once upon a time","max_tokens":3000,"temperature":0}`, "--wait-for-empty")
	reqOut, err := req.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	req.Stderr = req.Stdout
	if err := req.Start(); err != nil {
		t.Fatal(err)
	}
	var first schemas.Event
	for reqLines := bufio.NewScanner(reqOut); reqLines.Scan(); {
		if json.Unmarshal(reqLines.Bytes(), &first) == nil && first.Type == schemas.EventToken {
			break
		}
	}
	if err := req.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	_ = req.Wait()
	if first.JobID == "" {
		t.Fatal("nats req printed no token event")
	}
	poll(t, 30*time.Second, func() error {
		st, err := rbeeJSON[schemas.JobStatus](t, "jobs", "show", first.JobID, "--server", natsURL)
		if err != nil || st.State != schemas.JobCancelled || st.Tokens >= 3000 {
			return fmt.Errorf("job of the interrupted nats req: %+v, %v", st, err)
		}
		return nil
	})

	sub := operator(ctx, "sub", "rbee.v2.stream.demo.>")
	subOut, err := sub.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	sub.Stderr = sub.Stdout
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(subOut)
	for lines.Scan() && !strings.Contains(lines.Text(), "Subscribing on rbee.v2.stream.demo.>") {
	}
	pub := `{"id":"job-1","model":"stories260K","stream":"rbee.v2.stream.demo.job-1","prompt":"Once upon a time","max_tokens":32}`
	if out, err := operator(ctx, "pub", "rbee.v2.jobs.stories260K", pub).CombinedOutput(); err != nil {
		t.Fatalf("nats pub: %v\n%s", err, out)
	}
	ended := false
	for !ended && lines.Scan() {
		ended = strings.Contains(lines.Text(), `"type":"end"`) && strings.Contains(lines.Text(), `"job_id":"job-1"`)
	}
	_ = sub.Process.Kill()
	_ = sub.Wait()
	if !ended {
		t.Error("nats sub saw no end event for job-1")
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"micro", "ls"}, "rbee-queen"},
		{[]string{"stream", "info", "RBEE_JOBS"}, "Messages: 0"},
		{[]string{"stream", "subjects", "RBEE_STREAMS"}, "rbee.v2.stream.demo.job-1"},
		{[]string{"kv", "ls", "RBEE_WORKERS"}, "stories260K-0"},
		{[]string{"stream", "ls"}, "RBEE_JOBS"},
		{[]string{"kv", "put", "RBEE_CANCELS", "job-1", "x"}, "x"},
		{[]string{"sub", "rbee.v2.heartbeat.>", "--count", "1"}, "rbee.v2.heartbeat."},
	} {
		out, err := operator(ctx, c.args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), c.want) {
			t.Errorf("nats %v: %v, want %q in\n%s", c.args, err, c.want, out)
		}
	}

	// The client context may not do the operator's part.
	for _, args := range [][]string{
		{"pub", "rbee.v2.jobs.stories260K", pub},
		{"sub", ">", "--count", "1", "--timeout", "2s"},
		{"stream", "info", "RBEE_JOBS"},
	} {
		out, err := nats(ctx, args...).CombinedOutput()
		if err == nil || !strings.Contains(strings.ToLower(string(out)), "permission") {
			t.Errorf("nats --context rbee %v: %v, want a permissions violation in\n%s", args, err, out)
		}
	}
}
