package hive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// assertOrphansGone checks that none of pids is a live process. They are
// not the test's children, so once dead they may linger as zombies until
// init reaps them: a zombie counts as gone.
func assertOrphansGone(t *testing.T, pids []int) {
	t.Helper()
	killOnFailure(t, pids)
	checkFor(t, waitFor, func() error {
		for _, pid := range pids {
			err := syscall.Kill(pid, 0)
			if errors.Is(err, syscall.ESRCH) {
				continue
			}
			stat, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if i := bytes.LastIndexByte(stat, ')'); rerr == nil && i >= 0 && bytes.HasPrefix(stat[i+1:], []byte(" Z")) {
				continue
			}
			return fmt.Errorf("pid %d is alive (kill 0: %v)", pid, err)
		}
		return nil
	})
}

func TestStopKillsWhatWorkerLeftBehind(t *testing.T) {
	// The worker exits on SIGTERM, leaving in its process group a child
	// that ignores SIGTERM; the hive must kill the group after the exit.
	f := newRealHive(t, "spawn", nil)
	f.run()
	ready := f.waitReady(2)
	if err := f.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	st := f.h.Workers()[0]
	if st.LastExit != "exit status 0" {
		t.Errorf("worker %+v, want a graceful exit", st)
	}
	started := f.started()
	assertGone(t, started)
	orphans := slices.DeleteFunc(ready, func(pid int) bool { return slices.Contains(started, pid) })
	if len(orphans) != 1 {
		t.Fatalf("ready %v, started %v: want one grandchild", ready, started)
	}
	assertOrphansGone(t, orphans)
}

// orphaningHive starts fakeHive, a hive of two sleeping workers on a data
// directory, as a process of its own, and returns when both workers are
// ready.
type orphaningHive struct {
	url, model, dataDir string
	cmd                 *exec.Cmd
	workers             []int // sorted
}

func startOrphaningHive(t *testing.T) *orphaningHive {
	t.Helper()
	s := bustest.RunServer(t)
	model := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(model, []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	readyDir, dataDir := t.TempDir(), t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envChild+"=hive", envReadyDir+"="+readyDir,
		envNATS+"="+s.ClientURL(), envModel+"="+model, envDataDir+"="+dataDir)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only if the test failed before killing it; errors say it is gone.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	f := &realHive{t: t, readyDir: readyDir}
	workers := f.waitReady(2)
	killOnFailure(t, workers)
	slices.Sort(workers)
	// A worker may be ready a moment before the hive has recorded it.
	checkFor(t, waitFor, func() error {
		b, err := os.ReadFile(filepath.Join(dataDir, stateFileName))
		if err != nil {
			return err
		}
		var f stateFile
		if err := json.Unmarshal(b, &f); err != nil {
			return err
		}
		if len(f.Workers) != 2 {
			return fmt.Errorf("state file records %d workers, want 2", len(f.Workers))
		}
		for _, r := range f.Workers {
			if r.PID == 0 {
				return fmt.Errorf("worker %s is still being started", r.ID)
			}
		}
		return nil
	})
	return &orphaningHive{url: s.ClientURL(), model: model, dataDir: dataDir, cmd: cmd, workers: workers}
}

// kill kills the hive with SIGKILL and checks its workers outlived it.
func (o *orphaningHive) kill(t *testing.T) {
	t.Helper()
	if err := o.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := o.cmd.Wait(); err == nil || err.Error() != "signal: killed" {
		t.Fatalf("hive exited with %v, want killed", err)
	}
	for _, pid := range o.workers {
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("worker %d after its hive was killed: %v, want alive", pid, err)
		}
	}
}

func TestKilledHiveLeavesWorkersForTheNextHiveToAdopt(t *testing.T) {
	// A hive killed with SIGKILL cannot stop its workers, and nothing else
	// does: they keep serving. The hive started next on the same data
	// directory finds them by PID and start time and adopts them.
	o := startOrphaningHive(t)
	s, model, dataDir, cmd, workers := o.url, o.model, o.dataDir, o.cmd, o.workers

	nc, err := nats.Connect(s)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// While the first hive lives, a second on its data directory refuses.
	second, err := New(nc, orphaningConfig(s, model, dataDir), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = second.Run(t.Context())
	if want := fmt.Sprintf("in use by process %d", cmd.Process.Pid); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("second hive on the same data directory: Run %v, want an error saying %q", err, want)
	}

	o.kill(t)

	log := &recorder{}
	next, err := New(nc, orphaningConfig(s, model, dataDir), slog.New(log), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- next.Run(ctx) }()
	running := true
	defer func() {
		if running {
			cancel()
			<-done
		}
	}()
	checkFor(t, waitFor, func() error {
		var pids []int
		for _, st := range next.Workers() {
			if st.State != StateRunning || !st.Adopted {
				return fmt.Errorf("worker %+v, want running, adopted", st)
			}
			pids = append(pids, st.PID)
		}
		if slices.Sort(pids); !slices.Equal(pids, workers) {
			return fmt.Errorf("hive runs %v, want the first hive's %v", pids, workers)
		}
		return nil
	})
	if started, adopted := len(log.find("worker started")), len(log.find("worker adopted")); started != 0 || adopted != 2 {
		t.Errorf("the restarted hive started %d workers and adopted %d, want 0 and 2", started, adopted)
	}
	// Stopping adopted workers is stopping them: SIGTERM to their groups,
	// and the hive sees them go though they are not its children.
	cancel()
	running = false
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, st := range next.Workers() {
		if st.State != StateStopped || st.ExitKind != schemas.ExitUnknown {
			t.Errorf("after stop: %+v, want stopped, exit unknown", st)
		}
	}
	assertOrphansGone(t, workers)
	// They left the state file when they exited: a third hive adopts none.
	st, err := openState(dataDir, "orphaning-hive", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if len(st.workers) != 0 {
		t.Errorf("state file still records %v", st.workers)
	}
}

// A restarted hive that runs fewer workers than its predecessor adopts the
// ones it runs and stops the others: its key is back in the registry, so
// their orphan grace would never end them.
func TestRestartedHiveStopsRecordedWorkersItDoesNotRun(t *testing.T) {
	o := startOrphaningHive(t)
	o.kill(t)
	b, err := os.ReadFile(filepath.Join(o.dataDir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	var recorded stateFile
	if err := json.Unmarshal(b, &recorded); err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, r := range recorded.Workers {
		pids[r.ID] = r.PID
	}
	kept, dropped := pids["orphaning-hive-m-0"], pids["orphaning-hive-m-1"]
	if kept == 0 || dropped == 0 {
		t.Fatalf("state file records %+v, want both workers", recorded.Workers)
	}
	nc, err := nats.Connect(o.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cfg := orphaningConfig(o.url, o.model, o.dataDir)
	cfg.Models[0].Replicas = 1
	next, err := New(nc, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- next.Run(ctx) }()
	checkFor(t, waitFor, func() error {
		if st := next.Workers(); len(st) != 1 || st[0].PID != kept || !st[0].Adopted {
			return fmt.Errorf("workers %+v, want m-0 adopted as pid %d", st, kept)
		}
		return nil
	})
	assertOrphansGone(t, []int{dropped})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertOrphansGone(t, []int{kept})
}

// recordedPIDs reads the PIDs in a hive's state file, by worker ID.
func recordedPIDs(t *testing.T, dataDir string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	var recorded stateFile
	if err := json.Unmarshal(b, &recorded); err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, r := range recorded.Workers {
		pids[r.ID] = r.PID
	}
	return pids
}

// A worker writes to its log file, not to a pipe from its hive: with the
// hive killed it writes on, and the hive that adopts it follows the file
// from where it is then.
func TestWorkerOutputOutlivesItsHive(t *testing.T) {
	o := startOrphaningHive(t)
	o.kill(t)
	const id = "orphaning-hive-m-0"
	pid := recordedPIDs(t, o.dataDir)[id]
	path := workerLogPath(o.dataDir, id)
	// Line 1, with no hive to read it.
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	checkFor(t, waitFor, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), `"msg":"still writing","n":1`) {
			return fmt.Errorf("worker log holds %q, want its line 1", b)
		}
		return nil
	})
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("worker %d after writing without its hive: %v, want alive", pid, err)
	}

	nc, err := nats.Connect(o.url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	log := &recorder{}
	next, err := New(nc, orphaningConfig(o.url, o.model, o.dataDir), slog.New(log), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- next.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		assertOrphansGone(t, o.workers)
	}()
	checkFor(t, waitFor, func() error {
		if n := len(log.find("worker adopted")); n != 2 {
			return fmt.Errorf("%d workers adopted, want 2", n)
		}
		return nil
	})
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	checkFor(t, waitFor, func() error {
		for _, r := range log.find("still writing") {
			if r.attrs["n"].Int64() == 2 {
				if r.attrs["worker_id"].String() != id || r.attrs["pid"].Int64() != int64(pid) {
					return fmt.Errorf("line 2 logged with %v, want worker %s pid %d", r.attrs, id, pid)
				}
				return nil
			}
		}
		return errors.New("line 2 not logged yet")
	})
	// Followed from the file's end at adoption: line 1 was left alone.
	if recs := log.find("still writing"); len(recs) != 1 {
		t.Errorf("%d lines logged, want line 2 only", len(recs))
	}
}

// sameWorkerCommand starts, as a hive that dies before recording its PID
// would have, the process the hive of f starts for its first worker.
func sameWorkerCommand(t *testing.T, f *realHive, dataDir string) (workerSpec, *exec.Cmd) {
	t.Helper()
	m := f.h.cfg.Models[0]
	id := workerID(f.h.cfg.ID, m.Name, 0)
	spec := workerSpec{ID: id, Model: m.Name, Exe: f.h.cfg.Executable, Args: workerArgs(f.h.cfg, m, id)}
	out, err := createWorkerLog(dataDir, id)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(spec.Exe, spec.Args...)
	cmd.Env = append(os.Environ(), f.h.env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only if the test failed before it stopped; errors say it is gone.
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	f.waitReady(1)
	return spec, cmd
}

// writeState writes a hive's state file as a previous hive left it.
func writeState(t *testing.T, dataDir string, records ...workerRecord) {
	t.Helper()
	if err := writeFileAtomic(filepath.Join(dataDir, stateFileName), stateFile{Version: 1, HiveID: "test-hive", Workers: records}); err != nil {
		t.Fatal(err)
	}
}

// A hive that died after starting a worker, before recording its PID, left
// a start record: the next hive finds the process by its command line and
// adopts it rather than starting a second one.
func TestStartRecordOfALiveProcessIsAdopted(t *testing.T) {
	dataDir := t.TempDir()
	f := newRealHive(t, "sleep", func(c *Config) { c.DataDir = dataDir })
	spec, cmd := sameWorkerCommand(t, f, dataDir)
	writeState(t, dataDir, workerRecord{ID: spec.ID, Model: spec.Model, SpecHash: specHash(spec), Started: time.Now().UTC()})
	f.run()
	checkFor(t, waitFor, func() error {
		if st, ok := f.status(spec.ID); !ok || st.State != StateRunning || !st.Adopted || st.PID != cmd.Process.Pid {
			return fmt.Errorf("worker %+v, want running, adopted, pid %d", st, cmd.Process.Pid)
		}
		return nil
	})
	if started := len(f.log.find("worker started")); started != 0 {
		t.Errorf("the hive started %d workers, want none: the one running is adopted", started)
	}
	if pid := recordedPIDs(t, dataDir)[spec.ID]; pid != cmd.Process.Pid {
		t.Errorf("state file records pid %d, want the adopted %d", pid, cmd.Process.Pid)
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("the adopted worker: %v, want a clean exit on the hive's SIGTERM", err)
	}
}

// A start record without a process (the hive died before the start) is
// dropped: the wanted worker starts, and one no longer wanted is forgotten.
func TestStartRecordWithoutAProcessIsDropped(t *testing.T) {
	dataDir := t.TempDir()
	f := newRealHive(t, "sleep", func(c *Config) { c.DataDir = dataDir })
	m := f.h.cfg.Models[0]
	id := workerID(f.h.cfg.ID, m.Name, 0)
	spec := workerSpec{ID: id, Model: m.Name, Exe: f.h.cfg.Executable, Args: workerArgs(f.h.cfg, m, id)}
	gone := workerSpec{ID: "test-hive-gone-0", Model: "gone", Exe: spec.Exe, Args: []string{"worker", "--worker-id", "test-hive-gone-0"}}
	writeState(t, dataDir,
		workerRecord{ID: spec.ID, Model: spec.Model, SpecHash: specHash(spec)},
		workerRecord{ID: gone.ID, Model: gone.Model, SpecHash: specHash(gone)})
	f.run()
	pid := f.waitRunning(id)
	if st, _ := f.status(id); st.Adopted {
		t.Errorf("worker %+v, want started, not adopted", st)
	}
	if n := len(f.log.find("a start of a worker that a previous hive began left no process; starting the worker anew")); n != 1 {
		t.Errorf("%d start records dropped for the wanted worker, want 1", n)
	}
	checkFor(t, waitFor, func() error {
		if pids := recordedPIDs(t, dataDir); len(pids) != 1 || pids[id] != pid {
			return fmt.Errorf("state file records %v, want only %s as pid %d", pids, id, pid)
		}
		return nil
	})
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, []int{pid})
}
