//go:build unix

package hive

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// fakeResources is a machine whose free memory, disk and GPUs a test sets.
// mem, when set, computes the memory from the workers alive now.
type fakeResources struct {
	mu   sync.Mutex
	free uint64
	disk uint64
	gpus []GPU
	mem  func() uint64
}

func (r *fakeResources) MemoryAvailable() (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.mem != nil {
		return r.mem(), nil
	}
	return r.free, nil
}

func (r *fakeResources) DiskFree(string) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.disk, nil
}

func (r *fakeResources) GPUs() ([]GPU, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.gpus), nil
}

func (r *fakeResources) set(f func(*fakeResources)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

// plenty is more than any test's worker needs.
const plenty = 1 << 40

// otherModel writes a second model file for a test's catalog.
func otherModel(t *testing.T, name string) ModelSpec {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".gguf")
	if err := os.WriteFile(path, []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	return ModelSpec{Name: name, Path: path}
}

// client is a control client on the test's connection, once the hive's
// service answers.
func (f *realHive) client() *bus.HiveClient {
	f.t.Helper()
	hc := bus.NewHiveClient(f.nc, f.subj)
	checkFor(f.t, waitFor, func() error {
		_, err := hc.List(f.t.Context(), f.h.ID())
		return err
	})
	return hc
}

// counter reads a counter of the hive's registry by one label.
func (f *realHive) counter(name, label, value string) float64 {
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
			if label == "" {
				return m.GetCounter().GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// status finds a worker in the hive's list.
func (f *realHive) status(id string) (WorkerStatus, bool) {
	for _, st := range f.h.Workers() {
		if st.ID == id {
			return st, true
		}
	}
	return WorkerStatus{}, false
}

// waitRunning waits until worker id runs and returns its PID.
func (f *realHive) waitRunning(id string) int {
	f.t.Helper()
	var pid int
	checkFor(f.t, waitFor, func() error {
		st, ok := f.status(id)
		if !ok || st.State != StateRunning || st.PID == 0 {
			return fmt.Errorf("worker %s: %+v (listed %v), want running", id, st, ok)
		}
		pid = st.PID
		return nil
	})
	return pid
}

// waitGone waits until worker id has left the hive's list.
func (f *realHive) waitGone(id string) {
	f.t.Helper()
	checkFor(f.t, waitFor, func() error {
		if st, ok := f.status(id); ok {
			return fmt.Errorf("worker %s still listed: %+v", id, st)
		}
		return nil
	})
}

// rejections subscribes to the hive's worker.rejected audit events.
func (f *realHive) rejections() chan schemas.AuditEvent {
	f.t.Helper()
	ch := make(chan schemas.AuditEvent, 16)
	sub, err := f.nc.Subscribe(f.subj.AuditType(schemas.AuditSpawnRejected), func(m *nats.Msg) {
		var ev schemas.AuditEvent
		if json.Unmarshal(m.Data, &ev) == nil {
			ch <- ev
		}
	})
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := f.nc.Flush(); err != nil {
		f.t.Fatal(err)
	}
	return ch
}

func wantCode(t *testing.T, what string, err error, code schemas.Code) {
	t.Helper()
	if schemas.CodeOf(err) != code {
		t.Errorf("%s: %v, want code %s", what, err, code)
	}
}

// Every spawn the preflight refuses gets its code back, is counted by code
// and audited; nothing starts.
func TestPreflightRejectsSpawns(t *testing.T) {
	res := &fakeResources{free: plenty, disk: plenty}
	var vram uint64
	var mu sync.Mutex
	f := newRealHive(t, "sleep", func(c *Config) {
		c.Catalog, c.Models = c.Models, nil
		c.Preflight = Preflight{
			Resources: res, MaxWorkers: 1, MemoryReserve: 1 << 30, DiskReserve: 1 << 20,
			Estimate: func(m ModelSpec) (Need, error) {
				mu.Lock()
				defer mu.Unlock()
				return Need{RAM: 1 << 30, VRAM: vram}, nil
			},
		}
	})
	f.run()
	audits := f.rejections()
	hc := f.client()
	spawn := func() error {
		_, err := hc.Spawn(t.Context(), "test-hive", schemas.SpawnRequest{Model: "tiny:1b"})
		return err
	}

	res.set(func(r *fakeResources) { r.free = 2<<30 - 1 }) // the worker and the reserve need 2 GiB
	wantCode(t, "memory short by a byte", spawn(), schemas.CodeInsufficientRAM)
	res.set(func(r *fakeResources) { r.free, r.disk = plenty, 1<<20-1 })
	wantCode(t, "disk below its reserve", spawn(), schemas.CodeInsufficientDisk)
	res.set(func(r *fakeResources) { r.disk = plenty })
	mu.Lock()
	vram = 8 << 30
	mu.Unlock()
	wantCode(t, "GPU memory without a GPU", spawn(), schemas.CodeInsufficientVRAM)
	res.set(func(r *fakeResources) {
		r.gpus = []GPU{{Index: 0, FreeBytes: 4 << 30, TotalBytes: 80 << 30}, {Index: 1, FreeBytes: 6 << 30, TotalBytes: 80 << 30}}
	})
	wantCode(t, "GPU memory short on every GPU", spawn(), schemas.CodeInsufficientVRAM)
	res.set(func(r *fakeResources) { r.gpus[1].FreeBytes = 9 << 30 })
	if err := spawn(); err != nil {
		t.Fatalf("spawn with room on GPU 1: %v", err)
	}
	pid := f.waitRunning("test-hive-tiny_1b-0")
	wantCode(t, "a second worker past MaxWorkers 1", spawn(), schemas.CodeTooManyWorkers)
	if st, _ := f.status("test-hive-tiny_1b-0"); st.PID != pid {
		t.Errorf("the running worker changed: %+v, was pid %d", st, pid)
	}
	if n := len(f.h.Workers()); n != 1 {
		t.Errorf("%d workers after the refusals, want 1", n)
	}

	want := map[schemas.Code]float64{
		schemas.CodeInsufficientRAM: 1, schemas.CodeInsufficientDisk: 1, schemas.CodeInsufficientVRAM: 2, schemas.CodeTooManyWorkers: 1,
	}
	for code, n := range want {
		if got := f.counter("rbee_hive_spawn_rejected_total", "code", string(code)); got != n {
			t.Errorf("rbee_hive_spawn_rejected_total{code=%s} = %v, want %v", code, got, n)
		}
	}
	got := map[schemas.Code]float64{}
	checkFor(t, waitFor, func() error {
		for {
			select {
			case ev := <-audits:
				if ev.WorkerID == "" || ev.Model != "tiny:1b" || ev.HiveID != "test-hive" || ev.Reason == "" || ev.Validate() != nil {
					return fmt.Errorf("audit event %+v lacks worker, model, hive or reason", ev)
				}
				got[ev.Code]++
			default:
				if len(got) != len(want) || got[schemas.CodeInsufficientVRAM] != 2 {
					return fmt.Errorf("audited %v, want %v", got, want)
				}
				return nil
			}
		}
	})
	list, err := hc.List(t.Context(), "test-hive")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Models) != 1 || list.Models[0].Rejected != schemas.CodeTooManyWorkers || list.Models[0].Wanted != 1 {
		t.Errorf("list models %+v, want tiny:1b wanted once, last refused TOO_MANY_WORKERS", list.Models)
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, []int{pid})
}

// A configured worker the preflight refuses waits, pending, and starts once
// the machine has room; its refusal is recorded once, not at every retry.
func TestConfiguredWorkerStartsOnceThereIsRoom(t *testing.T) {
	res := &fakeResources{free: 1, disk: plenty}
	f := newRealHive(t, "sleep", func(c *Config) {
		c.Preflight = Preflight{Resources: res}
		c.ReconcileInterval = 10 * time.Millisecond
	})
	f.run()
	checkFor(t, waitFor, func() error {
		if n := len(f.log.find("preflight refused a worker")); n != 1 {
			return fmt.Errorf("%d refusals logged, want 1", n)
		}
		return nil
	})
	st, _ := f.status("test-hive-tiny_1b-0")
	if st.State != StatePending || st.PID != 0 {
		t.Errorf("refused worker: %+v, want pending", st)
	}
	res.set(func(r *fakeResources) { r.free = plenty })
	pid := f.waitRunning("test-hive-tiny_1b-0")
	if n := len(f.log.find("preflight refused a worker")); n != 1 {
		t.Errorf("%d refusals logged across the retries, want 1", n)
	}
	if got := f.counter("rbee_hive_spawn_rejected_total", "code", string(schemas.CodeInsufficientRAM)); got != 1 {
		t.Errorf("rejections counted %v, want 1", got)
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, []int{pid})
}

// Changing the wanted set stops only the workers no longer wanted and
// starts only the new ones: the others keep their process.
func TestWantedSetChangeStartsAndStopsOnlyTheDifference(t *testing.T) {
	var b, c ModelSpec
	f := newRealHive(t, "sleep", func(cfg *Config) {
		b, c = otherModel(t, "b"), otherModel(t, "c")
		cfg.Models[0].Replicas = 2
		cfg.Models = append(cfg.Models, b)
	})
	f.run()
	f.waitReady(3)
	before := map[string]int{}
	for _, st := range f.h.Workers() {
		before[st.ID] = f.waitRunning(st.ID)
	}
	if len(before) != 3 {
		t.Fatalf("workers %v, want 3", before)
	}

	a := f.h.cfg.Models[0]
	a.Replicas = 1
	c.Replicas = 1
	if err := f.h.SetWanted([]ModelSpec{a, c}); err != nil {
		t.Fatal(err)
	}
	f.waitGone("test-hive-tiny_1b-1")
	f.waitGone("test-hive-b-0")
	cPID := f.waitRunning("test-hive-c-0")
	assertGone(t, []int{before["test-hive-tiny_1b-1"], before["test-hive-b-0"]})
	if st, _ := f.status("test-hive-tiny_1b-0"); st.PID != before["test-hive-tiny_1b-0"] || st.Restarts != 0 {
		t.Errorf("the kept worker: %+v, want pid %d never restarted", st, before["test-hive-tiny_1b-0"])
	}
	var ids []string
	for _, st := range f.h.Workers() {
		ids = append(ids, st.ID)
	}
	if want := []string{"test-hive-tiny_1b-0", "test-hive-c-0"}; !slices.Equal(ids, want) {
		t.Errorf("workers %v, want %v", ids, want)
	}
	if n := len(f.started()); n != 4 {
		t.Errorf("%d processes started, want 4: three, then one for the new model", n)
	}

	// Another spec for a kept worker is a difference too: it restarts.
	a.Slots = 2
	if err := f.h.SetWanted([]ModelSpec{a, c}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, waitFor, func() error {
		st, ok := f.status("test-hive-tiny_1b-0")
		if !ok || st.State != StateRunning || st.PID == before["test-hive-tiny_1b-0"] {
			return fmt.Errorf("tiny_1b-0: %+v, want running in a new process", st)
		}
		return nil
	})
	if st, _ := f.status("test-hive-c-0"); st.PID != cPID {
		t.Errorf("c-0 %+v, want untouched pid %d", st, cPID)
	}
	if err := f.h.SetWanted([]ModelSpec{{Name: "bad name!", Path: c.Path}}); err == nil {
		t.Error("SetWanted with an invalid model: nil error")
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, f.started())
}

// The hive's micro service: list, spawn, stop, drain and shutdown, on the
// endpoints nats req reaches.
func TestControlServiceEndpoints(t *testing.T) {
	f := newRealHive(t, "sleep", nil)
	f.run()
	f.waitReady(1)
	hc := f.client()
	ctx := t.Context()

	// Discoverable as a micro service.
	m, err := f.nc.Request("$SRV.INFO."+ServiceName, nil, waitFor)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Metadata  map[string]string `json:"metadata"`
		Endpoints []struct {
			Subject string `json:"subject"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(m.Data, &info); err != nil {
		t.Fatal(err)
	}
	var subjects []string
	for _, e := range info.Endpoints {
		subjects = append(subjects, e.Subject)
	}
	for _, ep := range schemas.HiveEndpoints {
		if !slices.Contains(subjects, "rbee.v2.control.hive.test-hive."+ep) {
			t.Errorf("endpoints %v lack %s", subjects, ep)
		}
	}
	if info.Metadata["hive_id"] != "test-hive" {
		t.Errorf("metadata %v, want hive_id", info.Metadata)
	}

	first := f.waitRunning("test-hive-tiny_1b-0")
	sp, err := hc.Spawn(ctx, "test-hive", schemas.SpawnRequest{Model: "tiny:1b"})
	if err != nil || sp.WorkerID != "test-hive-tiny_1b-1" || !sp.Started {
		t.Fatalf("spawn: %+v, %v", sp, err)
	}
	second := f.waitRunning("test-hive-tiny_1b-1")
	sp, err = hc.Spawn(ctx, "test-hive", schemas.SpawnRequest{Model: "tiny:1b", OnDemand: true})
	if err != nil || sp.Started || sp.WorkerID != "test-hive-tiny_1b-0" {
		t.Errorf("on-demand spawn of a model already wanted: %+v, %v; want the wanted worker, nothing started", sp, err)
	}
	_, err = hc.Spawn(ctx, "test-hive", schemas.SpawnRequest{Model: "gpt-9"})
	wantCode(t, "spawn of a model not in the catalog", err, schemas.CodeModelNotFound)
	for _, bad := range []string{`not json`, `{"model":"a.b"}`, `{"model":"tiny:1b","extra":1}`} {
		r, err := f.nc.Request(f.subj.HiveControl("test-hive", schemas.HiveSpawn), []byte(bad), waitFor)
		if err != nil {
			t.Fatal(err)
		}
		var er schemas.ErrorResponse
		if json.Unmarshal(r.Data, &er) != nil || er.Error.Code != schemas.CodeInvalidRequest || r.Header.Get("Nats-Service-Error-Code") != string(schemas.CodeInvalidRequest) {
			t.Errorf("spawn %s: %q %v, want invalid_request", bad, r.Data, r.Header)
		}
	}

	list, err := hc.List(ctx, "test-hive")
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Workers) != 2 || list.Workers[0].PID != first || list.Workers[1].PID != second ||
		list.Workers[0].State != string(StateRunning) || len(list.Models) != 1 || list.Models[0].Wanted != 2 {
		t.Errorf("list: %+v", list)
	}

	st, err := hc.Stop(ctx, "test-hive", schemas.StopRequest{WorkerID: "test-hive-tiny_1b-0", Reason: "test"})
	if err != nil || st.Exit != "exit status 0" {
		t.Fatalf("stop: %+v, %v; want it gone by its own exit 0", st, err)
	}
	assertGone(t, []int{first})
	if _, ok := f.status("test-hive-tiny_1b-0"); ok {
		t.Error("a stopped worker is still supervised")
	}
	_, err = hc.Stop(ctx, "test-hive", schemas.StopRequest{WorkerID: "test-hive-tiny_1b-0"})
	wantCode(t, "stop of a worker already stopped", err, schemas.CodeNotFound)
	_, err = hc.Stop(ctx, "no-such-hive", schemas.StopRequest{WorkerID: "w"})
	wantCode(t, "stop on a hive nobody runs", err, schemas.CodeNotFound)

	dr, err := hc.Drain(ctx, "test-hive", schemas.DrainRequest{Reason: "maintenance"})
	if err != nil || !dr.Draining {
		t.Fatalf("drain: %+v, %v", dr, err)
	}
	_, err = hc.Spawn(ctx, "test-hive", schemas.SpawnRequest{Model: "tiny:1b"})
	wantCode(t, "spawn on a draining hive", err, schemas.CodeShuttingDown)
	if hb := f.h.heartbeat(); !hb.Draining {
		t.Error("a draining hive's heartbeat does not say so")
	}
	if st, _ := f.status("test-hive-tiny_1b-1"); st.PID != second || st.State != StateRunning {
		t.Errorf("draining stopped a worker: %+v", st)
	}
	if dr, err = hc.Drain(ctx, "test-hive", schemas.DrainRequest{Resume: true}); err != nil || dr.Draining {
		t.Fatalf("resume: %+v, %v", dr, err)
	}
	if sp, err = hc.Spawn(ctx, "test-hive", schemas.SpawnRequest{Model: "tiny:1b"}); err != nil || sp.WorkerID != "test-hive-tiny_1b-0" {
		t.Fatalf("spawn after resume: %+v, %v; want the lowest free replica", sp, err)
	}
	third := f.waitRunning("test-hive-tiny_1b-0")

	sd, err := hc.Shutdown(ctx, "test-hive", schemas.ShutdownRequest{Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(sd.Workers)
	if !slices.Equal(sd.Workers, []string{"test-hive-tiny_1b-0", "test-hive-tiny_1b-1"}) {
		t.Errorf("shutdown stops %v, want both workers", sd.Workers)
	}
	if err := f.wait(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertGone(t, []int{second, third})
	for _, st := range f.h.Workers() {
		if st.State != StateStopped {
			t.Errorf("%s: %s after shutdown, want stopped", st.ID, st.State)
		}
	}
}

// alive counts the fake workers that told readyDir they run and are still
// there.
func alive(dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			n++
		}
	}
	return n
}

// A worker without a job for the idle timeout is stopped, and one that is
// busy is not; an on-demand spawn loads it again.
func TestIdleWorkerIsUnloaded(t *testing.T) {
	f := newRealHive(t, "sleep", func(c *Config) {
		c.IdleTimeout = 300 * time.Millisecond
		c.ReconcileInterval = 20 * time.Millisecond
		c.Catalog, c.Models = append(c.Models, otherModel(t, "busy")), nil
	})
	f.run()
	hc := f.client()
	// The busy model's worker starts first and says it has a job: its
	// idle time, had it none, would run out before the other's, so the
	// other's unload proves the loop passed it over.
	if _, err := hc.Spawn(t.Context(), "test-hive", schemas.SpawnRequest{Model: "busy"}); err != nil {
		t.Fatal(err)
	}
	busyPID := f.waitRunning("test-hive-busy-0")
	beat := func(busy int) {
		data, _ := json.Marshal(schemas.WorkerHeartbeat{
			WorkerID: "test-hive-busy-0", HiveID: "test-hive", Model: "busy", State: schemas.WorkerReady,
			Slots: 1, Busy: busy, PID: busyPID, Time: time.Now(),
		})
		if err := f.nc.Publish(f.subj.Heartbeat(schemas.KindWorker, "test-hive-busy-0"), data); err != nil {
			t.Fatal(err)
		}
		if err := f.nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	beat(1)
	checkFor(t, waitFor, func() error {
		f.h.mu.Lock()
		defer f.h.mu.Unlock()
		if p := f.h.procs["test-hive-busy-0"]; p == nil || p.busy != 1 {
			return errors.New("the busy heartbeat is not recorded")
		}
		return nil
	})
	if _, err := hc.Spawn(t.Context(), "test-hive", schemas.SpawnRequest{Model: "tiny:1b"}); err != nil {
		t.Fatal(err)
	}
	idlePID := f.waitRunning("test-hive-tiny_1b-0")
	f.waitGone("test-hive-tiny_1b-0")
	assertGone(t, []int{idlePID})
	if st, ok := f.status("test-hive-busy-0"); !ok || st.PID != busyPID {
		t.Errorf("the busy worker was unloaded: %+v", st)
	}
	if got := f.counter("rbee_hive_workers_unloaded_idle_total", "", ""); got != 1 {
		t.Errorf("unloads counted %v, want 1", got)
	}
	beat(0) // its job ended: now it idles out too
	f.waitGone("test-hive-busy-0")
	assertGone(t, []int{busyPID})

	sp, err := hc.Spawn(t.Context(), "test-hive", schemas.SpawnRequest{Model: "tiny:1b", OnDemand: true})
	if err != nil || !sp.Started {
		t.Fatalf("on-demand spawn after the unload: %+v, %v", sp, err)
	}
	f.waitRunning(sp.WorkerID)
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
}

// When a spawn finds too little memory, the least recently used idle
// worker of another model is stopped to make room, and the spawn starts
// once its memory is free.
func TestShortMemoryEvictsLeastRecentlyUsedIdleWorker(t *testing.T) {
	var f *realHive
	res := &fakeResources{disk: plenty}
	f = newRealHive(t, "sleep", func(c *Config) {
		c.Models = nil
		c.Catalog = []ModelSpec{otherModel(t, "a"), otherModel(t, "b"), otherModel(t, "c")}
		// Room for two workers of a gigabyte each.
		c.Preflight = Preflight{Resources: res, MemoryReserve: 1, Estimate: func(ModelSpec) (Need, error) { return Need{RAM: 1 << 30}, nil }}
	})
	res.set(func(r *fakeResources) {
		r.mem = func() uint64 { return uint64(2-min(alive(f.readyDir), 2))<<30 + 1<<20 }
	})
	f.run()
	hc := f.client()
	spawnRunning := func(model string) int {
		t.Helper()
		sp, err := hc.Spawn(t.Context(), "test-hive", schemas.SpawnRequest{Model: model})
		if err != nil {
			t.Fatalf("spawn %s: %v", model, err)
		}
		pid := f.waitRunning(sp.WorkerID)
		checkFor(t, waitFor, func() error {
			if alive(f.readyDir) != len(f.h.Workers()) {
				return errors.New("not every worker is ready")
			}
			return nil
		})
		return pid
	}
	aPID := spawnRunning("a")
	bPID := spawnRunning("b")
	cPID := spawnRunning("c") // a is the least recently used
	assertGone(t, []int{aPID})
	if _, ok := f.status("test-hive-a-0"); ok {
		t.Error("a is still supervised after its eviction")
	}
	if st, _ := f.status("test-hive-b-0"); st.PID != bPID {
		t.Errorf("b was touched: %+v", st)
	}
	if got := f.counter("rbee_hive_workers_evicted_total", "", ""); got != 1 {
		t.Errorf("evictions %v, want 1", got)
	}
	if got := f.counter("rbee_hive_spawn_rejected_total", "code", string(schemas.CodeInsufficientRAM)); got != 0 {
		t.Errorf("a spawn that evicted was counted as refused %v times", got)
	}
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, []int{bPID, cPID})
}
