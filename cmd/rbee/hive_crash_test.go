package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/schemas"
)

// crashBed is a queen on an embedded JetStream server whose hives' keys
// expire within a second of their last heartbeat, for tests that kill hives.
type crashBed struct {
	failoverBed
	url string
	nc  *nats.Conn
}

const (
	crashHiveTTL = time.Second
	crashBeat    = 250 * time.Millisecond // the hives' heartbeat interval
)

func newCrashBed(t *testing.T) *crashBed {
	t.Helper()
	srv := bustest.RunServer(t)
	nc, js := bustest.Connect(t, srv)
	subj, _ := schemas.NewSubjects("")
	httpAddr := freeAddr(t)
	b := &crashBed{failoverBed: failoverBed{js: js, subj: subj, base: "http://" + httpAddr}, url: srv.ClientURL(), nc: nc}
	start(t, "queen", "--server", b.url, "--http", httpAddr, "--hive-ttl", crashHiveTTL.String())
	poll(t, 60*time.Second, func() error {
		resp, err := http.Get(b.base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	return b
}

// hiveArgs runs hive id with one worker of the bundled model, a data
// directory of its own, and extra flags after the defaults.
func (b *crashBed) hiveArgs(id, dataDir string, extra ...string) []string {
	return append([]string{"hive", "--server", b.url, "--id", id, "--serve", "stories260K=" + modelPath,
		"--ctx", fmt.Sprint(failoverCtx), "--threads", "1", "--cache-dir", filepath.Join(dataDir, "cache"),
		"--data-dir", dataDir, "--heartbeat-interval", crashBeat.String()}, extra...)
}

// waitWorker waits for hive's worker to be ready and returns its heartbeat;
// not is a PID it must not have (0: any).
func (b *crashBed) waitWorker(t *testing.T, hive string, not int) schemas.WorkerHeartbeat {
	t.Helper()
	var hb schemas.WorkerHeartbeat
	poll(t, 60*time.Second, func() error {
		ws, err := liveWorkers(t.Context(), b.js, b.subj)
		if err != nil {
			return err
		}
		for _, w := range ws {
			if w.HiveID == hive && w.PID != not {
				hb = w
				return nil
			}
		}
		return fmt.Errorf("no ready worker of hive %s (other than pid %d) among %d", hive, not, len(ws))
	})
	killPIDOnFailure(t, hb.PID)
	return hb
}

// hiveBeat reads hive's heartbeat from the hives bucket.
func (b *crashBed) hiveBeat(ctx context.Context, hive string) (schemas.HiveHeartbeat, error) {
	var hb schemas.HiveHeartbeat
	kv, err := b.js.KeyValue(ctx, b.subj.HivesBucket())
	if err != nil {
		return hb, err
	}
	e, err := kv.Get(ctx, hive)
	if err != nil {
		return hb, err
	}
	return hb, json.Unmarshal(e.Value(), &hb)
}

// killPIDOnFailure kills pid if the test fails: a worker whose hive the test
// killed is no child of the test, and nothing else would stop it.
func killPIDOnFailure(t *testing.T, pid int) {
	t.Cleanup(func() {
		if t.Failed() && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// processGone reports whether pid is gone. A worker whose hive died is
// init's child: once dead, it may stay a zombie until init reaps it.
func processGone(pid int) bool {
	if errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(stat, ')')
	return err != nil || (i >= 0 && bytes.HasPrefix(stat[i+1:], []byte(" Z")))
}

func waitPIDGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	poll(t, within, func() error {
		if !processGone(pid) {
			return fmt.Errorf("pid %d is alive", pid)
		}
		return nil
	})
}

// SIGKILL of the hive mid-stream: the worker carries on and the stream
// completes; the hive started again on its data directory adopts the
// worker (same PID, no second process) and stops it when told to.
func TestHiveKilledMidStreamWorkerFinishesAndIsAdopted(t *testing.T) {
	b := newCrashBed(t)
	dataDir := t.TempDir()
	args := b.hiveArgs("crash-hive", dataDir)
	first := start(t, args...)
	w := b.waitWorker(t, "crash-hive", 0)

	want := unbroken(t, infer.Request{Prompt: "Once upon a time", MaxTokens: 3000, Sampling: sample.Params{Temperature: 0}})
	r := b.stream(t, map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0})
	jobID := r.resp.Header.Get("X-Rbee-Job-Id")
	got := r.readN(20)
	if err := first.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.Wait()
	got += r.rest()
	if got != want {
		t.Errorf("the stream after its hive was killed differs from an unbroken run (%d and %d bytes) %s", len(got), len(want), diverge(got, want))
	}
	for _, ev := range b.jobEvents(t, jobID) {
		if ev.WorkerID != w.WorkerID || ev.Delivery != 1 {
			t.Fatalf("event %d from %s delivery %d, want all from %s's first delivery", ev.Seq, ev.WorkerID, ev.Delivery, w.WorkerID)
		}
	}
	if processGone(w.PID) {
		t.Fatalf("worker %d died with its hive", w.PID)
	}

	started, err := b.nc.SubscribeSync(b.subj.AuditType(schemas.AuditWorkerStarted))
	if err != nil {
		t.Fatal(err)
	}
	defer started.Unsubscribe()
	adopted, err := b.nc.SubscribeSync(b.subj.AuditType(schemas.AuditWorkerAdopted))
	if err != nil {
		t.Fatal(err)
	}
	defer adopted.Unsubscribe()
	second := start(t, args...)
	m, err := adopted.NextMsg(60 * time.Second)
	if err != nil {
		t.Fatalf("no worker.adopted event: %v", err)
	}
	var ev schemas.AuditEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.PID != w.PID || ev.WorkerID != w.WorkerID || ev.HiveID != "crash-hive" {
		t.Errorf("adopted %+v, want %s pid %d", ev, w.WorkerID, w.PID)
	}
	poll(t, 30*time.Second, func() error {
		hb, err := b.hiveBeat(t.Context(), "crash-hive")
		if err != nil {
			return err
		}
		if !slices.Equal(hb.Workers, []string{w.WorkerID}) {
			return fmt.Errorf("the restarted hive runs %v, want %s", hb.Workers, w.WorkerID)
		}
		return nil
	})
	if n, _, _ := started.Pending(); n != 0 {
		t.Errorf("the restarted hive started %d workers, want none: it adopts", n)
	}
	// The adopted worker serves on.
	resp := postJSON(t, b.base+"/v1/completions", map[string]any{"model": "stories260K", "prompt": "x", "max_tokens": 4})
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Rbee-Worker-Id") != w.WorkerID {
		t.Errorf("job after adoption: status %d from %q", resp.StatusCode, resp.Header.Get("X-Rbee-Worker-Id"))
	}
	ws, err := liveWorkers(t.Context(), b.js, b.subj)
	if err != nil || len(ws) != 1 || ws[0].PID != w.PID {
		t.Errorf("live workers %+v (%v), want only pid %d", ws, err, w.PID)
	}
	stop(t, second, syscall.SIGTERM)
	waitPIDGone(t, w.PID, 30*time.Second)
}

// SIGKILL of the hive, never restarted: its worker notices the hive's key
// is gone, waits out the orphan grace, drains and exits.
func TestWorkerOfKilledHiveExitsAfterOrphanGrace(t *testing.T) {
	b := newCrashBed(t)
	const grace = time.Second
	h := start(t, b.hiveArgs("orphan-hive", t.TempDir(), "--orphan-grace", grace.String())...)
	w := b.waitWorker(t, "orphan-hive", 0)
	if err := h.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = h.Wait()
	killed := time.Now()
	waitPIDGone(t, w.PID, 60*time.Second)
	// The key expires a TTL after the hive's last beat, which came up to
	// one interval before the kill.
	if took := time.Since(killed); took < crashHiveTTL-crashBeat+grace {
		t.Errorf("worker exited %v after its hive was killed, before the hive's key expired and the grace passed", took)
	}
	// It drained: its own registry key went with it, not with the TTL.
	kv, err := b.js.KeyValue(t.Context(), b.subj.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(t.Context(), w.WorkerID); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		t.Errorf("worker key after the orphan exit: %v, want deleted", err)
	}
}

// A worker stopped with SIGSTOP is alive but silent: the hive sees its
// heartbeat stand still, kills it and starts a new process.
func TestStoppedWorkerIsDetectedAsHungAndReplaced(t *testing.T) {
	b := newCrashBed(t)
	hung, err := b.nc.SubscribeSync(b.subj.AuditType(schemas.AuditWorkerHung))
	if err != nil {
		t.Fatal(err)
	}
	defer hung.Unsubscribe()
	h := start(t, b.hiveArgs("hung-hive", t.TempDir(), "--hung-timeout", "3s")...)
	w := b.waitWorker(t, "hung-hive", 0)
	if err := syscall.Kill(w.PID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	next := b.waitWorker(t, "hung-hive", w.PID)
	if next.WorkerID != w.WorkerID {
		t.Errorf("replacement is %s, want %s again", next.WorkerID, w.WorkerID)
	}
	m, err := hung.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no worker.hung event: %v", err)
	}
	var ev schemas.AuditEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.PID != w.PID || !strings.HasPrefix(ev.Reason, "no heartbeat for ") || ev.ExitKind != schemas.ExitKilled {
		t.Errorf("hung event %+v, want pid %d killed for no heartbeat", ev, w.PID)
	}
	// The hive's own child: killed and reaped, not a zombie.
	if err := syscall.Kill(w.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("hung worker %d: kill 0: %v, want gone", w.PID, err)
	}
	stop(t, h, syscall.SIGTERM)
}

// A corrupt model file: the worker exits with the cannot-start status, and
// the hive marks it failed at once, says so in its heartbeat and never
// starts it again.
func TestCorruptModelIsNotRestarted(t *testing.T) {
	b := newCrashBed(t)
	// A well-formed GGUF file, so that the hive's preflight reads it, but
	// one tensor renamed: only loading the model, in the worker, finds it
	// broken.
	good, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	name := []byte("output_norm.weight")
	if bytes.Count(good, name) != 1 {
		t.Fatalf("the model holds %q %d times, want once", name, bytes.Count(good, name))
	}
	bad := filepath.Join(t.TempDir(), "corrupt.gguf")
	if err := os.WriteFile(bad, bytes.Replace(good, name, []byte("output_norm.weighx"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	started, err := b.nc.SubscribeSync(b.subj.AuditType(schemas.AuditWorkerStarted))
	if err != nil {
		t.Fatal(err)
	}
	defer started.Unsubscribe()
	failed, err := b.nc.SubscribeSync(b.subj.AuditType(schemas.AuditWorkerFailed))
	if err != nil {
		t.Fatal(err)
	}
	defer failed.Unsubscribe()
	dir := t.TempDir()
	h := start(t, "hive", "--server", b.url, "--id", "bad-hive", "--serve", "broken="+bad, "--threads", "1",
		"--cache-dir", dir, "--data-dir", dir, "--heartbeat-interval", "250ms")
	m, err := failed.NextMsg(60 * time.Second)
	if err != nil {
		t.Fatalf("no worker.failed event: %v", err)
	}
	var ev schemas.AuditEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ev.Reason, "cannot start (exit status 78)") {
		t.Errorf("failed event %+v, want cannot start", ev)
	}
	if n, _, _ := started.Pending(); n != 1 {
		t.Errorf("%d starts, want 1: a worker that cannot start is not restarted", n)
	}
	poll(t, 30*time.Second, func() error {
		hb, err := b.hiveBeat(t.Context(), "bad-hive")
		if err != nil {
			return err
		}
		if len(hb.Failed) != 1 || hb.Failed[0].Model != "broken" || hb.Failed[0].Reason != ev.Reason {
			return fmt.Errorf("heartbeat lists failed %+v, want broken with %q", hb.Failed, ev.Reason)
		}
		return nil
	})
	stop(t, h, syscall.SIGTERM)
}

// A second hive on a data directory in use refuses to start and names the
// process that holds it.
func TestSecondHiveOnSameDataDirRefuses(t *testing.T) {
	b := newCrashBed(t)
	dataDir := t.TempDir()
	first := start(t, b.hiveArgs("locked-hive", dataDir)...)
	b.waitWorker(t, "locked-hive", 0)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, rbeeBin, b.hiveArgs("locked-hive", dataDir)...).CombinedOutput()
	var exit *exec.ExitError
	want := fmt.Sprintf("directory %s is in use by process %d", dataDir, first.Process.Pid)
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), want) {
		t.Errorf("second hive: %v, output:\n%s\nwant exit status 1 saying %q", err, out, want)
	}
	ws, err := liveWorkers(t.Context(), b.js, b.subj)
	if err != nil || len(ws) != 1 {
		t.Errorf("live workers %+v (%v), want the first hive's one", ws, err)
	}
	stop(t, first, syscall.SIGTERM)
}

// Two rbee up on one JetStream directory: the second refuses instead of
// corrupting the first's state.
func TestSecondUpOnSameNATSDirRefuses(t *testing.T) {
	dir := t.TempDir()
	nats := filepath.Join(dir, "nats")
	first := startUp(t, "--data-dir", nats, "--hive-data-dir", filepath.Join(dir, "hive-1"))
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, rbeeBin, "up", "--http", freeAddr(t), "--nats-port", "-1", "--data-dir", nats,
		"--hive-data-dir", filepath.Join(dir, "hive-2"), "--cache-dir", filepath.Join(dir, "cache"), "--id", "second").CombinedOutput()
	want := fmt.Sprintf("nats data directory: directory %s is in use by process %d", nats, first.cmd.Process.Pid)
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("second rbee up: %v, output:\n%s\nwant it to say %q", err, out, want)
	}
	stop(t, first.cmd, syscall.SIGINT)
}

// A hive told to stop during a stream: its worker drains within the grace
// and hands the job back, and the other hive's worker finishes it, so the
// client's stream completes with exactly the text of an unbroken run.
func TestHiveShutdownMidStreamHandsTheJobOn(t *testing.T) {
	b := newCrashBed(t)
	hives := map[string]*exec.Cmd{}
	workers := map[string]string{} // worker ID to its hive
	for _, id := range []string{"stop-a", "stop-b"} {
		hives[id] = start(t, b.hiveArgs(id, t.TempDir(), "--graceful-timeout", "300ms")...)
		workers[b.waitWorker(t, id, 0).WorkerID] = id
	}
	want := unbroken(t, infer.Request{Prompt: "Once upon a time", MaxTokens: 3000, Sampling: sample.Params{Temperature: 0}})
	r := b.stream(t, map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0})
	jobID, first := r.resp.Header.Get("X-Rbee-Job-Id"), r.resp.Header.Get("X-Rbee-Worker-Id")
	victim := workers[first]
	if victim == "" {
		t.Fatalf("X-Rbee-Worker-Id %q names no worker of the test", first)
	}
	got := r.readN(20)
	stop(t, hives[victim], syscall.SIGTERM)
	got += r.rest()
	if got != want {
		t.Errorf("the stream after its hive stopped differs from an unbroken run (%d and %d bytes) %s", len(got), len(want), diverge(got, want))
	}
	checkStored(t, b.jobEvents(t, jobID))
	for id, h := range hives {
		if id != victim {
			stop(t, h, syscall.SIGTERM)
		}
	}
}
