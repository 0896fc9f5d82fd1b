package worker_test

import (
	"testing"
	"time"

	"github.com/rbee-dev/rbee/worker"
)

// A worker whose hive's key goes away drains and stops by itself once the
// orphan grace has passed, and not before.
func TestWorkerOfGoneHiveStopsAfterOrphanGrace(t *testing.T) {
	b := newBed(t)
	hives, err := b.js.KeyValue(testContext(t), b.subj.HivesBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hives.Put(testContext(t), "h1", []byte(`{"hive_id":"h1"}`)); err != nil {
		t.Fatal(err)
	}
	const grace = 300 * time.Millisecond
	r := b.startWorker(t, worker.Config{ID: "w-orphan", HiveID: "h1", OrphanGrace: grace})
	select {
	case err := <-r.done:
		t.Fatalf("worker stopped while its hive's key was there: %v", err)
	default:
	}
	gone := time.Now()
	if err := hives.Delete(testContext(t), "h1"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatalf("worker still running %v after its hive left", waitLong)
	}
	if took := time.Since(gone); took < grace {
		t.Errorf("worker stopped %v after its hive left, before the %v grace", took, grace)
	}
	// It drained as on a stop signal: its registry key is gone.
	if _, err := b.kv.Get(testContext(t), "w-orphan"); !isKeyGone(err) {
		t.Errorf("worker key after the orphan stop: %v, want gone", err)
	}
}
