//go:build unix

package hive

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/schemas"
)

// A worker that crashes on a machine now short of memory is not restarted
// until the preflight lets it: the refusal is counted, audited and logged
// once, as the loop's are, and the retries back off.
func TestRestartAfterACrashPassesThePreflight(t *testing.T) {
	res := &fakeResources{free: plenty, disk: plenty}
	f := newRealHive(t, "sleep", func(c *Config) { c.Preflight = Preflight{Resources: res} })
	audits := f.rejections()
	f.run()
	const id = "test-hive-tiny_1b-0"
	pid := f.waitRunning(id)
	res.set(func(r *fakeResources) { r.free = 1 })
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	const retry = "preflight refused the restart; trying again"
	checkFor(t, waitFor, func() error {
		if n := len(f.log.find(retry)); n < 3 {
			return fmt.Errorf("%d refused restarts, want 3", n)
		}
		return nil
	})
	for i, r := range f.log.find(retry)[:3] {
		// 20 ms after the crash, then doubling: 40, 80, 160 ms.
		if want := 40 * time.Millisecond << i; r.attrs["delay"].Duration() != want || r.attrs["code"].String() != string(schemas.CodeInsufficientRAM) {
			t.Errorf("refusal %d: %v, want delay %v and code INSUFFICIENT_RAM", i, r.attrs, want)
		}
	}
	if st, _ := f.status(id); st.State != StateBackoff || st.PID != 0 || st.Restarts != 0 {
		t.Errorf("worker %+v, want in backoff, not restarted", st)
	}
	refusals := f.log.find("preflight refused a worker")
	if len(refusals) != 1 || refusals[0].attrs["worker_id"].String() != id || refusals[0].attrs["code"].String() != string(schemas.CodeInsufficientRAM) {
		t.Errorf("refusals logged %v, want one, of %s for memory", refusals, id)
	}
	if got := f.counter("rbee_hive_spawn_rejected_total", "code", string(schemas.CodeInsufficientRAM)); got != 1 {
		t.Errorf("rejections counted %v, want 1", got)
	}
	select {
	case ev := <-audits:
		if ev.WorkerID != id || ev.Code != schemas.CodeInsufficientRAM || !strings.Contains(ev.Reason, "memory") {
			t.Errorf("audit %+v, want worker.rejected of %s for memory", ev, id)
		}
	case <-time.After(waitFor):
		t.Error("no worker.rejected audit event")
	}

	res.set(func(r *fakeResources) { r.free = plenty })
	next := f.waitRunning(id)
	if st, _ := f.status(id); next == pid || st.Restarts != 1 {
		t.Errorf("worker %+v, want restarted once as a new process", st)
	}
	if n := len(f.log.find("worker started")); n != 2 {
		t.Errorf("%d starts, want 2", n)
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, []int{pid, next})
}

// A worker that never says it is ready (this one never beats) is killed
// at the load timeout, and each such run counts as a failed start: the
// backoff grows though every run outlasts ResetAfter, and the breaker opens.
func TestWorkerStuckLoadingIsKilled(t *testing.T) {
	const load = 150 * time.Millisecond
	f := newRealHive(t, "sleep", func(c *Config) {
		c.LoadTimeout = load
		c.Restart.ResetAfter = load / 2
	})
	f.run()
	checkFor(t, waitFor, func() error {
		if st := f.h.Workers()[0]; st.State != StateFailed {
			return fmt.Errorf("worker %s after %d restarts, want failed", st.State, st.Restarts)
		}
		return nil
	})
	st := f.h.Workers()[0]
	if want := "circuit breaker open: 5 failures within 5m0s; last: signal: killed"; st.Reason != want || st.Restarts != 4 {
		t.Errorf("worker %+v, want failed after 4 restarts: %q", st, want)
	}
	hung := f.log.find("worker hung; killing it")
	if len(hung) != 5 {
		t.Fatalf("%d workers killed as hung, want 5", len(hung))
	}
	starts := f.log.find("worker started")
	for i, r := range hung {
		if reason := r.attrs["reason"].String(); !strings.HasPrefix(reason, "not ready ") || !strings.HasSuffix(reason, " after its start: stuck loading") {
			t.Errorf("killed because %q, want not ready", reason)
		}
		if ran := r.time.Sub(starts[i].time); ran < load {
			t.Errorf("killed %v after its start, before the load timeout", ran)
		}
	}
	for i, r := range f.log.find("restarting worker") {
		if want := 20 * time.Millisecond << i; r.attrs["delay"].Duration() != want {
			t.Errorf("delay %d: %v, want %v: a run that never got ready resets no backoff", i, r.attrs["delay"].Duration(), want)
		}
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, f.started())
}
