//go:build unix

package hive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// waitFor bounds every wait in these tests; they normally take milliseconds.
const waitFor = 10 * time.Second

// realHive is a hive running the test binary as its workers, on a real
// embedded NATS server.
type realHive struct {
	t        *testing.T
	h        *Hive
	nc       *nats.Conn
	js       jetstream.JetStream
	subj     schemas.Subjects
	reg      *prometheus.Registry
	log      *recorder
	readyDir string
	cancel   context.CancelFunc
	done     chan error
	result   *error
}

// newRealHive makes a hive whose workers run in mode, with short timers;
// mod changes the config before New.
func newRealHive(t *testing.T, mode string, mod func(*Config)) *realHive {
	t.Helper()
	// Provisioned: the hive keeps its key in the hives bucket.
	s, nc, js, _ := bustest.Provisioned(t)
	model := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(model, []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := &realHive{t: t, nc: nc, js: js, reg: prometheus.NewRegistry(), log: &recorder{}, readyDir: t.TempDir()}
	cfg := Config{
		ID:                "test-hive",
		Models:            []ModelSpec{{Name: "tiny:1b", Path: model}},
		Executable:        os.Args[0],
		ServerURL:         s.ClientURL(),
		ExtraEnv:          []string{envChild + "=" + mode, envReadyDir + "=" + f.readyDir},
		HeartbeatInterval: 50 * time.Millisecond,
		StopGrace:         5 * time.Second,
		Restart:           RestartPolicy{InitialDelay: 20 * time.Millisecond, MaxDelay: time.Second, ResetAfter: time.Minute},
	}
	if mod != nil {
		mod(&cfg)
	}
	h, err := New(nc, cfg, slog.New(f.log), f.reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.h, f.subj = h, h.cfg.Subjects
	return f
}

// run starts Run; the test's cleanup stops it if the test has not.
func (f *realHive) run() {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan error, 1)
	go func() { f.done <- f.h.Run(ctx) }()
	f.t.Cleanup(func() {
		cancel()
		f.wait()
	})
}

// wait waits for Run to return and returns its error.
func (f *realHive) wait() error {
	f.t.Helper()
	if f.result != nil {
		return *f.result
	}
	select {
	case err := <-f.done:
		f.result = &err
		return err
	case <-time.After(waitFor):
		f.t.Fatalf("Run did not return within %v", waitFor)
		return nil
	}
}

func (f *realHive) stop() error {
	f.t.Helper()
	f.cancel()
	return f.wait()
}

// waitReady waits until n fake workers have their signal handlers in place
// and returns their PIDs.
func (f *realHive) waitReady(n int) []int {
	f.t.Helper()
	var pids []int
	checkFor(f.t, waitFor, func() error {
		entries, err := os.ReadDir(f.readyDir)
		if err != nil {
			return err
		}
		pids = pids[:0]
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				return err
			}
			pids = append(pids, pid)
		}
		if len(pids) < n {
			return fmt.Errorf("%d of %d workers ready", len(pids), n)
		}
		return nil
	})
	return pids
}

// started returns the PID of every worker process the hive has started.
func (f *realHive) started() []int {
	var pids []int
	for _, r := range f.log.find("worker started") {
		pids = append(pids, int(r.attrs["pid"].Int64()))
	}
	return pids
}

// metric returns the value of the named metric for model.
func (f *realHive) metric(name, model string) float64 {
	f.t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "model" && l.GetValue() == model {
					if c := m.GetCounter(); c != nil {
						return c.GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	f.t.Fatalf("metric %s{model=%q} not found", name, model)
	return 0
}

// assertGone checks that none of pids is a live process, and that the hive
// has reaped them all (a zombie would still answer kill 0).
func assertGone(t *testing.T, pids []int) {
	t.Helper()
	if len(pids) == 0 {
		t.Fatal("no PIDs to check")
	}
	killOnFailure(t, pids)
	checkFor(t, waitFor, func() error {
		for _, pid := range pids {
			if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("pid %d: kill 0: %v, want ESRCH", pid, err)
			}
		}
		return nil
	})
}

// killOnFailure kills pids when the test ends failed, so that processes a
// broken hive left behind do not outlive the test run.
func killOnFailure(t *testing.T, pids []int) {
	t.Cleanup(func() {
		if t.Failed() {
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}

func TestCrashingWorkerRestartsWithGrowingDelaysThenBreakerOpens(t *testing.T) {
	f := newRealHive(t, "crash", nil)
	f.run()
	// The default breaker: the fifth failure within five minutes opens it.
	checkFor(t, waitFor, func() error {
		if st := f.h.Workers()[0]; st.State != StateFailed {
			return fmt.Errorf("worker %s after %d restarts, want failed", st.State, st.Restarts)
		}
		return nil
	})
	st := f.h.Workers()[0]
	want := "circuit breaker open: 5 failures within 5m0s; last: exit status 1"
	if st.Restarts != 4 || st.Reason != want || st.PID != 0 || st.ExitKind != schemas.ExitCrash || st.FailedAt.IsZero() {
		t.Errorf("failed worker %+v, want 4 restarts and reason %q", st, want)
	}
	hb := f.h.heartbeat()
	if len(hb.Failed) != 1 || hb.Failed[0].WorkerID != st.ID || hb.Failed[0].Model != "tiny:1b" || hb.Failed[0].Reason != want {
		t.Errorf("heartbeat lists failed workers %+v, want %s with its reason", hb.Failed, st.ID)
	}
	if err := f.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Jitter is 0, so the delays are exactly InitialDelay doubling.
	delays := f.log.find("restarting worker")
	starts := f.log.find("worker started")
	if len(starts) != 5 || len(delays) != 4 {
		t.Fatalf("%d starts and %d restart delays, want 5 and 4: the breaker stops the sixth", len(starts), len(delays))
	}
	for i, want := range []time.Duration{20, 40, 80, 160} {
		want *= time.Millisecond
		if got := delays[i].attrs["delay"].Duration(); got != want {
			t.Errorf("delay %d: %v, want %v", i, got, want)
		}
		if gap := starts[i+1].time.Sub(starts[i].time); gap < want {
			t.Errorf("start %d came %v after start %d, before the %v delay", i+1, gap, i, want)
		}
	}
	for _, r := range starts {
		if r.attrs["worker_id"].String() != "test-hive-tiny_1b-0" || r.attrs["model"].String() != "tiny:1b" || r.attrs["pid"].Int64() <= 0 {
			t.Errorf("start record lacks worker_id, model or pid: %v", r.attrs)
		}
	}
	exits := f.log.find("worker exited")
	if len(exits) != 5 {
		t.Errorf("%d exits logged, want 5", len(exits))
	}
	for _, r := range exits {
		if got, kind := r.attrs["exit"].String(), r.attrs["exit_kind"].String(); got != "exit status 1" || kind != schemas.ExitCrash {
			t.Errorf("worker exited with %q (%s), want exit status 1, a crash", got, kind)
		}
	}
	if n := len(f.log.find("worker failed; not restarting it")); n != 1 {
		t.Errorf("%d failure records, want 1", n)
	}
	if st := f.h.Workers()[0]; st.State != StateFailed {
		t.Errorf("after stop: %+v, want still failed", st)
	}
	if got := f.metric("rbee_hive_worker_restarts_total", "tiny:1b"); got != 4 {
		t.Errorf("restarts metric %v, want 4", got)
	}
	if got := f.metric("rbee_hive_workers_running", "tiny:1b"); got != 0 {
		t.Errorf("running gauge %v after stop, want 0", got)
	}
	assertGone(t, f.started())
}

// A worker that exits with the reserved status cannot start as configured
// (a corrupt model file): it is failed at once, never restarted.
func TestWorkerThatCannotStartIsNotRestarted(t *testing.T) {
	f := newRealHive(t, "cannot-start", nil)
	f.run()
	checkFor(t, waitFor, func() error {
		if st := f.h.Workers()[0]; st.State != StateFailed {
			return fmt.Errorf("worker %s, want failed", st.State)
		}
		return nil
	})
	st := f.h.Workers()[0]
	if st.Restarts != 0 || st.ExitKind != schemas.ExitCannotStart || !strings.HasPrefix(st.Reason, "cannot start (exit status 78)") {
		t.Errorf("worker %+v, want failed without a restart, cannot start", st)
	}
	if err := f.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := len(f.log.find("worker started")); n != 1 {
		t.Errorf("%d starts, want 1", n)
	}
	if n := len(f.log.find("restarting worker")); n != 0 {
		t.Errorf("%d restarts, want none", n)
	}
}

func TestStopIsGracefulWhenWorkersHonourSIGTERM(t *testing.T) {
	f := newRealHive(t, "sleep", func(c *Config) {
		c.Models[0].Replicas = 3
		c.StopGrace = waitFor // a kill would come only after the test gave up
	})
	f.run()
	ready := f.waitReady(3)
	if got := f.metric("rbee_hive_workers_running", "tiny:1b"); got != 3 {
		t.Errorf("running gauge %v, want 3", got)
	}
	if err := f.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, st := range f.h.Workers() {
		if st.State != StateStopped || st.LastExit != "exit status 0" || st.Restarts != 0 {
			t.Errorf("%s: %+v, want stopped by its own exit 0 and never restarted", st.ID, st)
		}
	}
	if n := len(f.log.find("worker still running after the grace period; killing it")); n != 0 {
		t.Errorf("%d workers killed, want none", n)
	}
	if got := f.metric("rbee_hive_workers_force_killed_total", "tiny:1b"); got != 0 {
		t.Errorf("force-killed metric %v, want 0", got)
	}
	if got := f.metric("rbee_hive_workers_graceful_shutdown_total", "tiny:1b"); got != 3 {
		t.Errorf("graceful metric %v, want 3", got)
	}
	started := f.started()
	slices.Sort(started)
	slices.Sort(ready)
	if !slices.Equal(started, ready) {
		t.Errorf("hive started %v, ready workers were %v", started, ready)
	}
	assertGone(t, started)
}

func TestStopKillsWorkersThatIgnoreSIGTERM(t *testing.T) {
	for _, n := range []int{1, 3} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			const grace = 200 * time.Millisecond
			f := newRealHive(t, "ignore-term", func(c *Config) {
				c.StopGrace = grace
				c.Models[0].Replicas = n
			})
			f.run()
			f.waitReady(n)
			// Stand-ins for the keys real workers keep in the registry: a
			// killed worker cannot delete its own.
			kv, err := f.js.KeyValue(t.Context(), f.subj.WorkersBucket())
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range f.h.Workers() {
				if _, err := kv.Put(t.Context(), st.ID, []byte("{}")); err != nil {
					t.Fatal(err)
				}
			}
			began := time.Now()
			if err := f.stop(); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if took := time.Since(began); took < grace {
				t.Errorf("stop took %v, less than the %v grace", took, grace)
			}
			for _, st := range f.h.Workers() {
				if st.State != StateStopped || st.LastExit != "signal: killed" || st.ExitKind != schemas.ExitKilled {
					t.Errorf("after stop: %+v, want stopped by SIGKILL", st)
				}
				if _, err := kv.Get(t.Context(), st.ID); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
					t.Errorf("registry key of killed %s: %v, want deleted", st.ID, err)
				}
			}
			if got := len(f.log.find("worker still running after the grace period; killing it")); got != n {
				t.Errorf("%d kill records, want %d", got, n)
			}
			if got := f.metric("rbee_hive_workers_force_killed_total", "tiny:1b"); got != float64(n) {
				t.Errorf("force-killed metric %v, want %d", got, n)
			}
			if got := f.metric("rbee_hive_workers_graceful_shutdown_total", "tiny:1b"); got != 0 {
				t.Errorf("graceful metric %v, want 0", got)
			}
			if count, sum := f.shutdownHistogram(); count != 1 || sum < grace.Seconds() {
				t.Errorf("shutdown duration: %d observations summing %vs, want one of at least the grace", count, sum)
			}
			assertGone(t, f.started())
		})
	}
}

// A hive with no workers (a catalog only) stops at once.
func TestStopWithoutWorkersIsImmediate(t *testing.T) {
	f := newRealHive(t, "sleep", func(c *Config) {
		c.Catalog, c.Models = c.Models, nil
		c.StopGrace = waitFor
	})
	f.run()
	checkFor(t, waitFor, func() error {
		if len(f.log.find("hive starting")) == 0 {
			return errors.New("hive not started yet")
		}
		return nil
	})
	if err := f.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := len(f.h.Workers()); n != 0 {
		t.Fatalf("%d workers, want none", n)
	}
	if count, sum := f.shutdownHistogram(); count != 1 || sum > 1 {
		t.Errorf("shutdown duration: %d observations summing %vs, want one well under a second", count, sum)
	}
}

// shutdownHistogram returns the hive's shutdown duration observations.
func (f *realHive) shutdownHistogram() (uint64, float64) {
	f.t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		f.t.Fatal(err)
	}
	for _, fam := range families {
		if fam.GetName() == "rbee_hive_shutdown_duration_seconds" {
			h := fam.GetMetric()[0].GetHistogram()
			return h.GetSampleCount(), h.GetSampleSum()
		}
	}
	f.t.Fatal("no shutdown duration metric")
	return 0, 0
}

func TestHeartbeatReportsMachineAndRunningWorkers(t *testing.T) {
	f := newRealHive(t, "sleep", func(c *Config) { c.Models[0].Replicas = 2 })
	beats := make(chan *nats.Msg, 64)
	sub, err := f.nc.ChanSubscribe(f.subj.Heartbeat(schemas.KindHive, "test-hive"), beats)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	f.run()
	f.waitReady(2)

	want := []string{"test-hive-tiny_1b-0", "test-hive-tiny_1b-1"}
	var hb schemas.HiveHeartbeat
	timeout := time.After(waitFor)
	for !slices.Equal(hb.Workers, want) {
		select {
		case m := <-beats:
			if got := m.Header.Get(schemas.HeaderSchema); got != "hive_heartbeat/v1" {
				t.Fatalf("schema header %q", got)
			}
			hb = schemas.HiveHeartbeat{}
			if err := json.Unmarshal(m.Data, &hb); err != nil {
				t.Fatalf("decode heartbeat: %v", err)
			}
			if err := hb.Validate(); err != nil {
				t.Fatalf("heartbeat %+v: %v", hb, err)
			}
			slices.Sort(hb.Workers)
		case <-timeout:
			t.Fatalf("no heartbeat listing %v within %v; last %+v", want, waitFor, hb)
		}
	}
	host, _ := os.Hostname()
	switch {
	case hb.HiveID != "test-hive" || hb.Hostname != host:
		t.Errorf("heartbeat names hive %q on %q", hb.HiveID, hb.Hostname)
	case hb.CPUs < 1:
		t.Errorf("cpus %d", hb.CPUs)
	case time.Since(hb.Time) > waitFor || hb.Time.After(time.Now()):
		t.Errorf("time %v is not now", hb.Time)
	}
	if _, _, err := memory(); err == nil && (hb.MemoryBytes == 0 || hb.FreeBytes == 0 || hb.FreeBytes > hb.MemoryBytes) {
		t.Errorf("memory %d bytes, %d free", hb.MemoryBytes, hb.FreeBytes)
	}
	// The registry holds the same heartbeat under the hive's ID.
	kv, err := f.js.KeyValue(t.Context(), f.subj.HivesBucket())
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, waitFor, func() error {
		e, err := kv.Get(t.Context(), "test-hive")
		if err != nil {
			return err
		}
		var kept schemas.HiveHeartbeat
		if err := json.Unmarshal(e.Value(), &kept); err != nil {
			return err
		}
		if slices.Sort(kept.Workers); kept.HiveID != "test-hive" || !slices.Equal(kept.Workers, want) ||
			!slices.Equal(kept.Models, []string{"tiny:1b"}) {
			return fmt.Errorf("registry key holds %+v", kept)
		}
		return nil
	})
	if err := f.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// A hive that stops leaves the registry at once, not after the TTL.
	if _, err := kv.Get(t.Context(), "test-hive"); !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
		t.Errorf("registry key after stop: %v", err)
	}
}

func TestControlShutdownStopsEveryWorker(t *testing.T) {
	f := newRealHive(t, "sleep", func(c *Config) { c.Models[0].Replicas = 2 })
	f.run()
	f.waitReady(2)
	ctl := f.subj.Control(schemas.KindHive, "test-hive")

	for _, bad := range []string{`{"command":"reboot"}`, `not json`, `{}`} {
		reply := controlRequest(t, f.nc, ctl, []byte(bad))
		if reply.OK || reply.Error == nil || reply.Error.Code != schemas.CodeInvalidRequest {
			t.Errorf("control %s: reply %+v, want an invalid_request error", bad, reply)
		}
	}
	for _, st := range f.h.Workers() {
		if st.State != StateRunning {
			t.Fatalf("%s is %s after bad control messages, want running", st.ID, st.State)
		}
	}

	reply := controlRequest(t, f.nc, ctl, []byte(`{"command":"shutdown","reason":"test"}`))
	if !reply.OK || reply.Error != nil {
		t.Fatalf("shutdown reply %+v, want ok", reply)
	}
	if err := f.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	for _, st := range f.h.Workers() {
		if st.State != StateStopped || st.LastExit != "exit status 0" {
			t.Errorf("%s: %+v, want stopped gracefully", st.ID, st)
		}
	}
	assertGone(t, f.started())
	if err := f.h.Run(context.Background()); err == nil {
		t.Error("second Run returned nil, want an error")
	}
}

func controlRequest(t *testing.T, nc *nats.Conn, subject string, data []byte) schemas.ControlReply {
	t.Helper()
	m, err := nc.Request(subject, data, waitFor)
	if err != nil {
		t.Fatalf("control request: %v", err)
	}
	var reply schemas.ControlReply
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		t.Fatalf("decode control reply %q: %v", m.Data, err)
	}
	return reply
}

// The hive records its workers' lives as audit events, in its own chain.
func TestWorkerLifecycleAuditEvents(t *testing.T) {
	f := newRealHive(t, "sleep", nil)
	f.run()
	pids := f.waitReady(1)
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	var got []schemas.AuditEvent
	checkFor(t, waitFor, func() error {
		got = got[:0]
		err := bus.AuditRecords(t.Context(), f.js, f.subj, time.Time{}, func(rec bus.AuditRecord) error {
			ev := rec.Event
			if err := ev.Validate(); err != nil || rec.Subject != f.subj.Audit("hive", "test-hive", ev.Type) {
				return fmt.Errorf("event %+v on %s: %v", ev, rec.Subject, err)
			}
			got = append(got, ev)
			return nil
		})
		if err == nil && len(got) != 4 {
			err = fmt.Errorf("audit events so far %+v, want started, hive stopping, stopped, hive stopped", got)
		}
		return err
	})
	if report, err := bus.VerifyAudit(t.Context(), f.js, f.subj); err != nil || !report.OK() {
		t.Errorf("the hive's chain: %+v, %v", report, err)
	}
	started, stopping, stopped, hiveStopped := got[0], got[1], got[2], got[3]
	if started.Type != schemas.AuditWorkerStarted || started.PID != pids[0] || started.HiveID != "test-hive" || started.Model != "tiny:1b" {
		t.Errorf("first event %+v, want worker.started for pid %d", started, pids[0])
	}
	if stopped.Type != schemas.AuditWorkerStopped || stopped.WorkerID != started.WorkerID || stopped.Exit != "exit status 0" {
		t.Errorf("third event %+v, want worker.stopped with exit status 0", stopped)
	}
	if stopped.ExitKind != schemas.ExitClean || stopped.Reason != "exited within the grace period" {
		t.Errorf("worker.stopped %+v, want a clean exit within the grace", stopped)
	}
	if stopping.Type != schemas.AuditHiveStopping || hiveStopped.Type != schemas.AuditHiveStopped ||
		!strings.HasPrefix(hiveStopped.Reason, "1 workers exited gracefully, 0 force-killed, in ") {
		t.Errorf("hive events %+v and %+v, want hive.stopping, then hive.stopped with 1 graceful", stopping, hiveStopped)
	}
}

func TestCrashIsAuditedAsExited(t *testing.T) {
	f := newRealHive(t, "crash", nil)
	sub, err := f.nc.SubscribeSync(f.subj.AuditType(schemas.AuditWorkerExited))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	f.run()
	m, err := sub.NextMsg(waitFor)
	if err != nil {
		t.Fatal(err)
	}
	var ev schemas.AuditEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Exit != "exit status 1" || ev.PID == 0 || ev.WorkerID != "test-hive-tiny_1b-0" {
		t.Errorf("exited event %+v", ev)
	}
}
