package hive

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/rbee-dev/rbee/bus/bustest"
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

func TestWorkersDieWithKilledHive(t *testing.T) {
	// A hive killed with SIGKILL cannot stop its workers; Pdeathsig has the
	// kernel send them SIGTERM instead.
	s := bustest.RunServer(t)
	model := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(model, []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	readyDir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(),
		envChild+"=hive", envReadyDir+"="+readyDir, envNATS+"="+s.ClientURL(), envModel+"="+model)
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
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || err.Error() != "signal: killed" {
		t.Fatalf("hive exited with %v, want killed", err)
	}
	assertOrphansGone(t, workers)
}
