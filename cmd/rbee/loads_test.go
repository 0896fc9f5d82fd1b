package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// brokenModel is the bundled model with a tensor renamed: it parses, and
// cannot be loaded.
func brokenModel(t *testing.T) string {
	t.Helper()
	good, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "broken.gguf")
	if err := os.WriteFile(bad, bytes.Replace(good, []byte("output_norm.weight"), []byte("output_norm.weighx"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	return bad
}

// rbeeSplit runs rbee, returning its stdout and stderr apart.
func rbeeSplit(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(rbeeBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.Env = append(os.Environ(), "RBEE_LOG_LEVEL=warn")
	err = cmd.Run()
	return o.String(), e.String(), err
}

// rbee worker spawn follows the worker's load on the bus until it is
// ready, and ends with the error of one that cannot load its model.
func TestWorkerSpawnFollowsLoad(t *testing.T) {
	srv, _, _, _ := bustest.Provisioned(t)
	url := srv.ClientURL()
	dir := t.TempDir()
	h := start(t, "hive", "--server", url, "--id", "h-sp", "--serve", "stories260K="+modelPath, "--catalog", "broken="+brokenModel(t),
		"--threads", "1", "--ctx", "256", "--cache-dir", dir, "--data-dir", dir, "--heartbeat-interval", "250ms", "--graceful-timeout", "5s")
	nats := []string{"--server", url}
	readyWorkers(t, nats, "h-sp", 1)

	stdout, stderr, err := rbeeSplit(t, append([]string{"worker", "spawn", "--hive", "h-sp", "stories260K", "--wait", "60s"}, nats...)...)
	if err != nil {
		t.Fatalf("worker spawn: %v\n%s%s", err, stdout, stderr)
	}
	id := regexp.MustCompile(`starts worker (\S+) of stories260K`).FindStringSubmatch(stdout)
	if id == nil {
		t.Fatalf("worker spawn names no worker:\n%s", stdout)
	}
	if want := "worker " + id[1] + " ready (loaded 1.1 MiB in "; !strings.Contains(stdout, want) {
		t.Errorf("worker spawn's output has no %q:\n%s", want, stdout)
	}
	// Off a terminal: a line at a quarter (the whole, for a file of one
	// chunk), never a line per update.
	if want := "worker " + id[1] + " (stories260K): 100% (1.1 MiB of 1.1 MiB)\n"; !strings.Contains(stderr, want) || strings.Count(stderr, "100%") != 1 {
		t.Errorf("worker spawn's progress has not %q once:\n%s", want, stderr)
	}
	// Ready, when it said so.
	if ws := readyWorkers(t, nats, "h-sp", 2); ws[0].WorkerID != id[1] && ws[1].WorkerID != id[1] {
		t.Errorf("ready workers %+v, want %s among them", ws, id[1])
	}

	began := time.Now()
	stdout, stderr, err = rbeeSplit(t, append([]string{"worker", "spawn", "--hive", "h-sp", "broken", "--wait", "60s"}, nats...)...)
	if err == nil || !strings.Contains(stderr, "cannot load its model") || !strings.Contains(stderr, "output_norm.weight") {
		t.Errorf("spawn of a broken model: %v\n%s%s", err, stdout, stderr)
	}
	if took := time.Since(began); took > 30*time.Second {
		t.Errorf("the failure took %v to be told, want it at once", took)
	}
	stop(t, h, syscall.SIGTERM)
}

// rbee worker, run by hand, shows its own load and publishes it.
func TestWorkerShowsItsLoad(t *testing.T) {
	srv, nc, _, subj := bustest.Provisioned(t)
	sub, err := nc.SubscribeSync(subj.Progress(schemas.KindWorker, "by-hand"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(rbeeBin, "worker", "--server", srv.ClientURL(), "--model-name", "stories260K", "--model", modelPath,
		"--worker-id", "by-hand", "--threads", "1", "--ctx", "128")
	cmd.Env = append(os.Environ(), "RBEE_LOG_LEVEL=warn")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = os.Stderr, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(60 * time.Second)
	var seen []string
	for done := false; !done; {
		select {
		case l := <-lines:
			seen = append(seen, l)
			done = strings.HasPrefix(l, "loading stories260K: loaded 1.1 MiB in ")
		case <-deadline:
			t.Fatalf("no line saying the model loaded within 60s:\n%s", strings.Join(seen, "\n"))
		}
	}
	if seen[0] != "loading stories260K: 100% (1.1 MiB of 1.1 MiB)" {
		t.Errorf("lines %q, want the whole load first", seen)
	}
	phases := map[schemas.LoadPhase]bool{}
	for !phases[schemas.LoadReady] {
		m, err := sub.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatalf("progress on the bus: %v (saw %v)", err, phases)
		}
		p, ok := decodeProgress(m.Data)
		if !ok {
			t.Fatalf("progress %s", m.Data)
		}
		phases[p.Phase] = true
	}
	if !phases[schemas.LoadLoading] {
		t.Error("ready without loading before")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("worker: %v", err)
	}
	pw.Close()
	for range lines {
	}
}

// A worker run by hand with a broken model says so and exits as one that
// can never start.
func TestWorkerByHandFailsToLoad(t *testing.T) {
	srv, _, _, _ := bustest.Provisioned(t)
	_, stderr, err := rbeeSplit(t, "worker", "--server", srv.ClientURL(), "--model-name", "broken", "--model", brokenModel(t), "--threads", "1")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 78 || !strings.Contains(stderr, "loading broken: failed\n") {
		t.Errorf("worker with a broken model: %v\n%s", err, stderr)
	}
	// A missing file is told without a server to wait for.
	_, stderr, err = rbeeSplit(t, "worker", "--server", "nats://127.0.0.1:1", "--model-name", "gone", "--model", filepath.Join(t.TempDir(), "gone.gguf"))
	if !errors.As(err, &exit) || exit.ExitCode() != 78 || !strings.Contains(stderr, "no such file") {
		t.Errorf("worker with no model file: %v\n%s", err, stderr)
	}
}
