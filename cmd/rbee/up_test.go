package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// upInstance is a running `rbee up` with the addresses its banner named.
type upInstance struct {
	cmd      *exec.Cmd
	httpAddr string
	natsURL  string
}

// startUp runs `rbee up` on free ports and temporary directories and
// returns once its banner says it is ready. The test stops it.
func startUp(t *testing.T) upInstance {
	t.Helper()
	httpAddr := freeAddr(t)
	dir := t.TempDir()
	cmd := exec.Command(rbeeBin, "up", "--http", httpAddr, "--nats-port", "-1", "--data-dir", dir+"/nats", "--cache-dir", dir+"/cache")
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "RBEE_LOG_LEVEL=warn", "NATS_URL=nats://127.0.0.1:1") // ignored by up
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
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
	return upInstance{cmd: cmd, httpAddr: httpAddr, natsURL: natsURL}
}

// rbee up serves the bundled model from one command and Ctrl-C leaves no
// process behind.
func TestUpServesAndStopsCleanly(t *testing.T) {
	up := startUp(t)
	httpAddr, natsURL := up.httpAddr, up.natsURL

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

	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	subj, _ := schemas.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	workers, err := liveWorkers(ctx, js, subj)
	nc.Close()
	if err != nil || len(workers) != 1 {
		t.Fatalf("live workers %+v (%v), want 1", workers, err)
	}

	stop(t, up.cmd, os.Interrupt)
	poll(t, 10*time.Second, func() error {
		if err := syscall.Kill(workers[0].PID, 0); !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("worker pid %d still exists after rbee up stopped", workers[0].PID)
		}
		return nil
	})
}
