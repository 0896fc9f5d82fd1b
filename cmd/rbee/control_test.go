package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
)

// waitExit waits for a process that was told to stop by other means than
// a signal from the test, and checks it exited 0.
func waitExit(t *testing.T, cmd *exec.Cmd, within time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s exited with %v", strings.Join(cmd.Args[1:4], " "), err)
		}
	case <-time.After(within):
		t.Errorf("%s still running %v after its shutdown", strings.Join(cmd.Args[1:4], " "), within)
		_ = cmd.Process.Kill()
	}
}

// pidsGone waits until none of pids is a live process.
func pidsGone(t *testing.T, pids []int) {
	t.Helper()
	poll(t, 30*time.Second, func() error {
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("pid %d: kill 0: %v, want it gone", pid, err)
			}
		}
		return nil
	})
}

// readyWorkers polls workers ls until want ready workers of hive are there.
func readyWorkers(t *testing.T, nats []string, hive string, want int) []schemas.WorkerHeartbeat {
	t.Helper()
	var out []schemas.WorkerHeartbeat
	poll(t, 60*time.Second, func() error {
		ws, err := rbeeJSON[[]schemas.WorkerHeartbeat](t, append([]string{"workers", "ls"}, nats...)...)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, w := range ws {
			if w.HiveID == hive && w.State == schemas.WorkerReady {
				out = append(out, w)
			}
		}
		if len(out) != want {
			return fmt.Errorf("%d ready workers of %s, want %d: %+v", len(out), hive, want, ws)
		}
		return nil
	})
	return out
}

// The control commands against real hives and workers: worker spawn,
// worker stop, shutdown --hive, and shutdown, which stops every hive and,
// through them, every worker.
func TestControlCommands(t *testing.T) {
	srv := bustest.RunServer(t)
	url := srv.ClientURL()
	start(t, "queen", "--server", url, "--http", freeAddr(t))
	hiveArgs := func(id string) []string {
		return []string{"hive", "--server", url, "--id", id, "--serve", "stories260K=" + modelPath, "--ctx", "512",
			"--threads", "1", "--heartbeat-interval", "500ms", "--data-dir", t.TempDir(), "--graceful-timeout", "5s"}
	}
	one := start(t, hiveArgs("h-one")...)
	two := start(t, hiveArgs("h-two")...)
	nats := []string{"--server", url}
	first := readyWorkers(t, nats, "h-one", 1)[0]
	readyWorkers(t, nats, "h-two", 1)

	out := rbeeOut(t, append([]string{"worker", "spawn", "--hive", "h-one", "stories260K"}, nats...)...)
	if !strings.Contains(out, "h-one-stories260K-1") {
		t.Errorf("worker spawn: %q, want the new worker's ID", out)
	}
	both := readyWorkers(t, nats, "h-one", 2)
	if _, err := rbeeTry(append([]string{"worker", "spawn", "--hive", "h-one", "gpt-9"}, nats...)...); err == nil ||
		!strings.Contains(err.Error(), string(schemas.CodeModelNotFound)) {
		t.Errorf("spawn of a model the hive lacks: %v, want %s", err, schemas.CodeModelNotFound)
	}
	if _, err := rbeeTry(append([]string{"worker", "spawn", "stories260K"}, nats...)...); err == nil || !strings.Contains(err.Error(), "--hive") {
		t.Errorf("spawn without --hive: %v", err)
	}

	// The same endpoints answer the nats CLI, as the README shows.
	{
		cmd := exec.Command(natsCLI(t), "req", "rbee.v2.control.hive.h-one.list", "")
		cmd.Env = append(cmd.Environ(), "NATS_URL="+url, "NATS_CONTEXT=")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"id":"h-one-stories260K-1"`) {
			t.Errorf("nats req list: %v\n%s", err, out)
		}
	}

	// Its hive found from the worker's heartbeat.
	out = rbeeOut(t, append([]string{"worker", "stop", first.WorkerID}, nats...)...)
	if !strings.Contains(out, "stopped worker "+first.WorkerID) {
		t.Errorf("worker stop: %q", out)
	}
	pidsGone(t, []int{first.PID})
	left := readyWorkers(t, nats, "h-one", 1)
	if left[0].WorkerID != "h-one-stories260K-1" {
		t.Errorf("after the stop: %+v, want the spawned worker left", left)
	}
	if _, err := rbeeTry(append([]string{"worker", "stop", "no-such-worker"}, nats...)...); err == nil || !strings.Contains(err.Error(), string(schemas.CodeNotFound)) {
		t.Errorf("stop of an unknown worker: %v", err)
	}

	// One hive.
	twoWorkers := readyWorkers(t, nats, "h-two", 1)
	out = rbeeOut(t, append([]string{"shutdown", "--hive", "h-two"}, nats...)...)
	if !strings.Contains(out, "hive h-two shutting down") || !strings.Contains(out, "1 hives stopped") {
		t.Errorf("shutdown --hive: %q", out)
	}
	waitExit(t, two, 30*time.Second)
	pidsGone(t, []int{twoWorkers[0].PID})
	if ws := readyWorkers(t, nats, "h-one", 1); ws[0].PID != left[0].PID {
		t.Errorf("h-one's worker changed with h-two's shutdown: %+v", ws)
	}

	// Every hive, and through them every worker.
	var pids []int
	for _, w := range both {
		pids = append(pids, w.PID)
	}
	out = rbeeOut(t, append([]string{"shutdown"}, nats...)...)
	if !strings.Contains(out, "hive h-one shutting down") {
		t.Errorf("shutdown: %q", out)
	}
	waitExit(t, one, 30*time.Second)
	pidsGone(t, pids)
	hs, err := rbeeJSON[[]schemas.HiveHeartbeat](t, append([]string{"hives", "ls"}, nats...)...)
	if err != nil || len(hs) != 0 {
		t.Errorf("hives after shutdown: %+v, %v; want none", hs, err)
	}
	if out := rbeeOut(t, append([]string{"shutdown"}, nats...)...); !strings.Contains(out, "no live hives") {
		t.Errorf("shutdown with no hives: %q", out)
	}
}

// modelStatus is the status /v1/models gives model, and whether it lists it.
func modelStatus(t *testing.T, base, model string) (string, bool) {
	t.Helper()
	var list struct {
		Data []struct {
			ID     string `json:"id"`
			Status string `json:"status"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(getBody(t, base+"/v1/models")), &list); err != nil {
		t.Fatal(err)
	}
	for _, m := range list.Data {
		if m.ID == model {
			return m.Status, true
		}
	}
	return "", false
}

// A request for a model no worker serves, but a hive has in its catalog,
// loads a worker and gets its answer; the worker, idle, is unloaded, and
// the next request loads it again.
func TestOnDemandLoadAndIdleUnload(t *testing.T) {
	srv := bustest.RunServer(t)
	url := srv.ClientURL()
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	start(t, "queen", "--server", url, "--http", httpAddr)
	hiveCmd := start(t, "hive", "--server", url, "--id", "h-od", "--serve", "resident="+modelPath,
		"--catalog", "stories260K="+modelPath, "--ctx", "512", "--threads", "1", "--heartbeat-interval", "200ms",
		"--idle-timeout", "3s", "--data-dir", t.TempDir(), "--graceful-timeout", "5s")
	nats := []string{"--server", url}
	poll(t, 30*time.Second, func() error {
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %d", resp.StatusCode)
		}
		return nil
	})
	poll(t, 30*time.Second, func() error {
		if st, ok := modelStatus(t, base, "stories260K"); !ok || st != "not_loaded" {
			return fmt.Errorf("/v1/models: stories260K %q (listed %v), want not_loaded", st, ok)
		}
		return nil
	})

	want := greedy(t, infer.Request{Prompt: "Once upon a time", MaxTokens: 12})
	complete := func() string {
		t.Helper()
		resp := postJSON(t, base+"/v1/completions", map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 12, "temperature": 0})
		defer resp.Body.Close()
		var done struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&done); err != nil || resp.StatusCode != http.StatusOK || len(done.Choices) != 1 {
			t.Fatalf("completion of a model not loaded: %d %+v %v", resp.StatusCode, done, err)
		}
		if got := done.Choices[0].Text; got != want {
			t.Errorf("on-demand answer %q, want %q", got, want)
		}
		return resp.Header.Get("X-Rbee-Worker-Id")
	}
	began := time.Now()
	if w := complete(); w != "h-od-stories260K-0" {
		t.Errorf("answered by %q, want the loaded worker h-od-stories260K-0", w)
	}
	t.Logf("first request, with the load, took %v", time.Since(began).Round(time.Millisecond))
	if st, ok := modelStatus(t, base, "stories260K"); !ok || st != "" {
		t.Errorf("/v1/models: loaded stories260K has status %q (listed %v), want none", st, ok)
	}

	// Idle past the timeout: unloaded, and listed as loadable again.
	var pid int
	poll(t, 10*time.Second, func() error {
		ws, err := rbeeJSON[[]schemas.WorkerHeartbeat](t, append([]string{"workers", "ls"}, nats...)...)
		if i := slices.IndexFunc(ws, func(w schemas.WorkerHeartbeat) bool { return w.Model == "stories260K" }); i >= 0 {
			pid = ws[i].PID
			return nil
		}
		return fmt.Errorf("no stories260K worker registered: %+v, %v", ws, err)
	})
	poll(t, 30*time.Second, func() error {
		ws, err := rbeeJSON[[]schemas.WorkerHeartbeat](t, append([]string{"workers", "ls"}, nats...)...)
		if err != nil {
			return err
		}
		if i := slices.IndexFunc(ws, func(w schemas.WorkerHeartbeat) bool { return w.Model == "stories260K" }); i >= 0 {
			return fmt.Errorf("worker %s still registered", ws[i].WorkerID)
		}
		if st, _ := modelStatus(t, base, "stories260K"); st != "not_loaded" {
			return fmt.Errorf("/v1/models: %q, want not_loaded", st)
		}
		return nil
	})
	pidsGone(t, []int{pid})
	// The unloaded worker's replica number may still be taken for the
	// moment its supervisor takes to finish: any replica will do.
	if w := complete(); !strings.HasPrefix(w, "h-od-stories260K-") {
		t.Errorf("second load answered by %q, want a worker of h-od's stories260K", w)
	}
	stop(t, hiveCmd, syscall.SIGTERM)
}
