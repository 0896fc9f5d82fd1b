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
