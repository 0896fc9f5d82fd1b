package hive

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// The hung watcher reads what real workers write in the workers bucket; here
// the test writes it, as a worker that is busy but stuck, then as one whose
// heartbeat stopped.
func TestHungWatcher(t *testing.T) {
	_, nc, js, subj := bustest.Provisioned(t)
	model := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(model, []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(t.Context(), subj.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		progress bool // the heartbeat goes on, busy, with progress standing still; else one idle beat
		loading  bool // the heartbeat goes on, idle, never ready
		want     string
	}{
		{"no progress", true, false, "busy with 1 jobs and no token produced for "},
		{"no heartbeat", false, false, "no heartbeat for "},
		{"never ready", false, true, "not ready "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := New(nc, Config{
				ID: "hung", Models: []ModelSpec{{Name: "m", Path: model}}, ServerURL: "nats://x:1", Subjects: subj,
				HungTimeout: 500 * time.Millisecond, ProgressTimeout: 300 * time.Millisecond, LoadTimeout: 400 * time.Millisecond,
			}, slog.New(slog.DiscardHandler), nil)
			if err != nil {
				t.Fatal(err)
			}
			id := "hung-m-" + strings.ReplaceAll(tc.name, " ", "_")
			busy := 0
			if tc.progress {
				busy = 1
			}
			state := schemas.WorkerReady
			if tc.loading {
				state = schemas.WorkerStarting
			}
			beat := func() {
				hb, _ := json.Marshal(schemas.WorkerHeartbeat{WorkerID: id, Model: "m", State: state,
					Slots: 1, Busy: busy, PID: 4242, Progress: 7, Time: time.Now()})
				if _, err := kv.Put(context.Background(), id, hb); err != nil {
					t.Error(err)
				}
			}
			beat()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			var beats sync.WaitGroup
			if tc.progress || tc.loading {
				beats.Go(func() {
					tick := time.NewTicker(50 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-ctx.Done():
							return
						case <-tick.C:
							beat()
						}
					}
				})
			}
			hung := make(chan hang, 1)
			began := time.Now()
			var watch sync.WaitGroup
			watch.Go(func() { (&kvHungWatcher{h: h}).watch(ctx, id, 4242, hung) })
			select {
			case h := <-hung:
				if !strings.HasPrefix(h.reason, tc.want) || h.loading != tc.loading {
					t.Errorf("hung because %+v, want %q... (loading %v)", h, tc.want, tc.loading)
				}
				if took := time.Since(began); took < 300*time.Millisecond {
					t.Errorf("called hung after %v, before the timeout", took)
				}
			case <-time.After(waitFor):
				t.Fatalf("not found hung within %v", waitFor)
			}
			cancel()
			watch.Wait()
			beats.Wait()
		})
	}
}
