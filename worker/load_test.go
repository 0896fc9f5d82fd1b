package worker_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

// progressOf reads the next progress message of sub.
func progressOf(t *testing.T, sub *nats.Subscription) schemas.WorkerProgress {
	t.Helper()
	m, err := sub.NextMsg(waitLong)
	if err != nil {
		t.Fatalf("no progress message: %v", err)
	}
	var p schemas.WorkerProgress
	if err := json.Unmarshal(m.Data, &p); err != nil {
		t.Fatalf("progress %s: %v", m.Data, err)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("progress %s: %v", m.Data, err)
	}
	return p
}

// A worker tells its load on the bus from nothing read to the whole file,
// then, once it takes jobs, that it is ready and how long the load took.
func TestLoadModelPublishesProgress(t *testing.T) {
	b := newBed(t)
	st, err := os.Stat(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.nc.SubscribeSync(b.subj.Progress(schemas.KindWorker, "w-load"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := worker.Config{ID: "w-load", HiveID: "h1", Model: modelName, Subjects: b.subj}
	var local []infer.LoadProgress
	m, stats, err := worker.LoadModel(b.nc, cfg, modelPath, infer.Options{Threads: 1,
		Progress: func(p infer.LoadProgress) { local = append(local, p) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if stats.Bytes != st.Size() || stats.Took <= 0 {
		t.Errorf("stats %+v, want %d bytes and a time", stats, st.Size())
	}
	if len(local) < 2 || local[len(local)-1] != (infer.LoadProgress{Done: st.Size(), Total: st.Size()}) {
		t.Errorf("the caller's progress saw %v", local)
	}
	first := progressOf(t, sub)
	if first.Phase != schemas.LoadLoading || first.DoneBytes != 0 || first.TotalBytes != st.Size() ||
		first.WorkerID != "w-load" || first.HiveID != "h1" || first.Model != modelName {
		t.Errorf("first message %+v, want loading 0 of %d", first, st.Size())
	}
	for p := first; p.DoneBytes < st.Size(); {
		p = progressOf(t, sub)
		if p.Phase != schemas.LoadLoading {
			t.Fatalf("%+v before the load was whole", p)
		}
	}

	cfg.Load = stats
	b.startWorkerOn(t, m, cfg)
	ready := progressOf(t, sub)
	if ready.Phase != schemas.LoadReady || ready.LoadMillis != stats.Took.Milliseconds() ||
		ready.DoneBytes != st.Size() || ready.TotalBytes != st.Size() {
		t.Errorf("after the load: %+v, want ready with %v", ready, stats)
	}
}

// A model that cannot be loaded is told as a failed load, with why, before
// LoadModel returns.
func TestLoadModelPublishesFailure(t *testing.T) {
	b := newBed(t)
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	if err := os.WriteFile(bad, []byte("GGUF but nothing else"), 0o600); err != nil {
		t.Fatal(err)
	}
	sub, err := b.nc.SubscribeSync(b.subj.Progress(schemas.KindWorker, "w-bad"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := worker.Config{ID: "w-bad", Model: modelName, Subjects: b.subj}
	if _, _, err := worker.LoadModel(b.nc, cfg, bad, infer.Options{Threads: 1}); err == nil {
		t.Fatal("a broken model loaded")
	}
	var p schemas.WorkerProgress
	for p.Phase != schemas.LoadFailed {
		if p = progressOf(t, sub); p.Phase == schemas.LoadReady {
			t.Fatalf("%+v for a broken model", p)
		}
	}
	if p.Error.Code != schemas.CodeEngineFailure || !strings.Contains(p.Error.Message, "cannot be loaded") || p.TotalBytes != 21 {
		t.Errorf("failed load %+v (error %+v)", p, p.Error)
	}
	if _, err := sub.NextMsg(100 * time.Millisecond); err == nil {
		t.Error("a message after the failure")
	}
}

func TestLoadModelRefusesBadConfig(t *testing.T) {
	b := newBed(t)
	if _, _, err := worker.LoadModel(b.nc, worker.Config{ID: "w.1", Model: modelName}, modelPath, infer.Options{}); err == nil {
		t.Fatal("a worker ID with a dot loaded a model")
	}
}
