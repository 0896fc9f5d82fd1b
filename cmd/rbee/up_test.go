package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// upInstance is a running `rbee up` with the addresses its banner named.
type upInstance struct {
	cmd      *exec.Cmd
	httpAddr string
	natsURL  string
	stderr   *bytes.Buffer // what rbee up logged; read it once it has stopped
}

// startUp runs `rbee up` on free ports and temporary directories and
// returns once its banner says it is ready. The test stops it.
func startUp(t *testing.T, extra ...string) upInstance {
	t.Helper()
	httpAddr := freeAddr(t)
	dir := t.TempDir()
	// rbee up writes its NATS identities and the nats CLI's contexts
	// there; the test's own rbee and nats commands find them the same way.
	t.Setenv("RBEE_NKEYS_DIR", filepath.Join(dir, "nkeys"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	args := append([]string{"up", "--http", httpAddr, "--nats-port", "-1", "--data-dir", dir + "/nats", "--hive-data-dir", dir + "/hive", "--cache-dir", dir + "/cache"}, extra...)
	cmd := exec.Command(rbeeBin, args...)
	var logged bytes.Buffer
	cmd.Stderr = io.MultiWriter(os.Stderr, &logged)
	cmd.Env = append(os.Environ(), "RBEE_LOG_LEVEL=warn", "NATS_URL=nats://127.0.0.1:1") // ignored by up
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A test that does not stop rbee up itself gets it stopped as a user
	// would, so that its workers, which outlive a killed hive, stop too.
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			stop(t, cmd, syscall.SIGTERM)
		}
	})

	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Ctrl-C") {
				banner <- b.String()
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	var text string
	select {
	case text = <-banner:
	case <-time.After(60 * time.Second):
		t.Fatal("rbee up printed no banner within 60s")
	}
	if !strings.Contains(text, "http://"+httpAddr+"/v1") {
		t.Errorf("banner does not name the API at %s:\n%s", httpAddr, text)
	}
	natsURL := regexp.MustCompile(`nats://[0-9.]+:[0-9]+`).FindString(text)
	if natsURL == "" {
		t.Fatalf("banner names no NATS URL:\n%s", text)
	}
	return upInstance{cmd: cmd, httpAddr: httpAddr, natsURL: natsURL, stderr: &logged}
}

// connect dials rbee up's server as one of its identities.
func (up upInstance) connect(t *testing.T, role bus.Role) *nats.Conn {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(bus.SeedPath(os.Getenv("RBEE_NKEYS_DIR"), role))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(up.natsURL, opt, nats.CustomInboxPrefix(bus.InboxPrefix(role)))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// rbee up serves the bundled model from one command and Ctrl-C leaves no
// process behind.
func TestUpServesAndStopsCleanly(t *testing.T) {
	up := startUp(t)
	httpAddr := up.httpAddr

	resp := postJSON(t, "http://"+httpAddr+"/v1/completions", map[string]any{
		"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 64, "temperature": 0,
	})
	var out struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("completion: %d %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	if len(out.Choices) != 1 || !strings.HasPrefix(out.Choices[0].Text, ", there was a little girl named Lily.") {
		t.Errorf("completion %+v", out.Choices)
	}

	nc := up.connect(t, bus.RoleOperator)
	js, _ := jetstream.New(nc)
	subj, _ := schemas.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	workers, err := liveWorkers(ctx, js, subj)
	if err != nil || len(workers) != 1 {
		t.Fatalf("live workers %+v (%v), want 1", workers, err)
	}

	// The client commands, as the README runs them, find the client
	// identity by themselves.
	if out := rbeeOut(t, "models", "--server", up.natsURL); !strings.Contains(out, "stories260K") {
		t.Errorf("rbee models: %q", out)
	}
	if out := rbeeOut(t, "run", "stories260K", "Once upon a time", "--max-tokens", "8", "--temperature", "0", "--server", up.natsURL); !strings.HasPrefix(out, ", there was") {
		t.Errorf("rbee run: %q", out)
	}
	stop(t, up.cmd, os.Interrupt)
	// Every part did its work within its identity's permissions.
	if strings.Contains(up.stderr.String(), "Permissions Violation") {
		t.Errorf("the server refused one of rbee's own parts:\n%s", up.stderr.String())
	}
	// It showed the worker's load, and its readiness, off a terminal as
	// plain lines.
	for _, want := range []string{"worker " + workers[0].WorkerID + " (stories260K): 100% (1.1 MiB of 1.1 MiB)\n",
		"worker " + workers[0].WorkerID + " (stories260K): ready (loaded 1.1 MiB in "} {
		if !strings.Contains(up.stderr.String(), want) {
			t.Errorf("rbee up's output has no %q", want)
		}
	}
	poll(t, 10*time.Second, func() error {
		if err := syscall.Kill(workers[0].PID, 0); !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("worker pid %d still exists after rbee up stopped", workers[0].PID)
		}
		return nil
	})
}

// Ctrl-C on rbee up while a stream outlasts the shutdown grace: the client
// gets an error event with a code and the stream's end, not a cut
// connection, and rbee up still exits cleanly.
func TestUpCtrlCDuringStream(t *testing.T) {
	up := startUp(t, "--shutdown-grace", "1s", "--ctx", "8192")
	resp := postJSON(t, "http://"+up.httpAddr+"/v1/completions", map[string]any{
		"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8000, "temperature": 0, "stream": true,
	})
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var chunks []string
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		chunks = append(chunks, data)
		if len(chunks) == 5 {
			if err := up.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := len(chunks); n < 7 || chunks[n-1] != "[DONE]" || !strings.Contains(chunks[n-2], `"code":"shutting_down"`) {
		t.Fatalf("the stream ended with %q, want an error event with code shutting_down, then [DONE]", chunks[max(len(chunks)-2, 0):])
	}
	done := make(chan error, 1)
	go func() { done <- up.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("rbee up exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Error("rbee up did not stop within 60s of Ctrl-C")
		_ = up.cmd.Process.Kill()
	}
}
