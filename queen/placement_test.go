package queen

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/rbee-dev/rbee/schemas"
)

// A model no live worker serves is placed on the live hive with the most
// free memory that takes it: a draining hive is not asked, a refusing one
// is passed over, and every one refusing is no_capacity naming them.
func TestOnDemandPlacementOrder(t *testing.T) {
	f := newFixture(t, nil)
	kv, err := f.js.KeyValue(f.ctx(), f.subj.HivesBucket())
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked []string
	var smallRefuses atomic.Bool
	for _, h := range []struct {
		id       string
		free     uint64
		draining bool
		refuse   func() bool
	}{
		{"big", 10 << 30, false, func() bool { return true }},
		{"small", 1 << 30, false, smallRefuses.Load},
		{"drained", 100 << 30, true, func() bool { return false }},
	} {
		data, _ := json.Marshal(schemas.HiveHeartbeat{HiveID: h.id, CPUs: 2, FreeBytes: h.free, Draining: h.draining,
			Workers: []string{}, Models: []string{"lazy"}, Time: time.Now()})
		if _, err := kv.Put(f.ctx(), h.id, data); err != nil {
			t.Fatal(err)
		}
		// A hive's spawn endpoint, answering as the hive's micro service does.
		sub, err := f.nc.Subscribe(f.subj.HiveControl(h.id, schemas.HiveSpawn), func(m *nats.Msg) {
			var req schemas.SpawnRequest
			if json.Unmarshal(m.Data, &req) != nil || req.Model != "lazy" || !req.OnDemand {
				t.Errorf("hive %s got spawn %q, want an on-demand spawn of lazy", h.id, m.Data)
			}
			mu.Lock()
			asked = append(asked, h.id)
			mu.Unlock()
			reply := nats.NewMsg(m.Reply)
			if h.refuse() {
				e := schemas.Errorf(schemas.CodeInsufficientRAM, "%s is full", h.id)
				reply.Header.Set(micro.ErrorCodeHeader, string(e.Code))
				reply.Header.Set(micro.ErrorHeader, e.Message)
				reply.Data, _ = json.Marshal(schemas.ErrorResponse{Error: *e})
			} else {
				reply.Data, _ = json.Marshal(schemas.SpawnReply{HiveID: h.id, WorkerID: h.id + "-lazy-0", Started: true})
			}
			if err := m.RespondMsg(reply); err != nil {
				t.Error(err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	if err := f.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	if err := f.q.checkModel(f.ctx(), "lazy"); err != nil {
		t.Fatalf("a model a hive can load: %v, want it let through", err)
	}
	mu.Lock()
	if !slices.Equal(asked, []string{"big", "small"}) {
		t.Errorf("hives asked %v, want big (most free) then small, never the draining one", asked)
	}
	asked = nil
	mu.Unlock()

	smallRefuses.Store(true)
	err = f.q.checkModel(f.ctx(), "lazy")
	if e := wireError(err); e.Code != schemas.CodeNoCapacity || !strings.Contains(e.Message, "big: INSUFFICIENT_RAM") ||
		!strings.Contains(e.Message, "small: INSUFFICIENT_RAM") || !strings.Contains(e.Message, "drained: draining") {
		t.Errorf("every hive refusing: %v, want no_capacity naming each and why", err)
	}
	if err := f.q.checkModel(f.ctx(), "unknown"); wireError(err).Code != schemas.CodeModelNotFound {
		t.Errorf("a model no hive knows: %v, want model_not_found", err)
	}
}

// /v1/models lists what hives know but have not loaded, and marks the
// models whose workers failed.
func TestModelsListsNotLoadedAndFailed(t *testing.T) {
	f := newFixture(t, nil)
	f.putWorker("w1", "loaded", schemas.WorkerReady)
	kv, err := f.js.KeyValue(f.ctx(), f.subj.HivesBucket())
	if err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(schemas.HiveHeartbeat{HiveID: "h1", CPUs: 2, Workers: []string{"w1"},
		Models: []string{"loaded", "lazy", "broken"}, Time: time.Now(),
		Failed: []schemas.FailedWorker{{WorkerID: "h1-broken-0", Model: "broken", Reason: "circuit breaker open", Since: time.Now()}}})
	if _, err := kv.Put(f.ctx(), "h1", data); err != nil {
		t.Fatal(err)
	}
	_, body := f.do("GET", "/v1/models", "")
	created := f.q.started.Unix()
	jsonEqual(t, body, map[string]any{"object": "list", "data": []any{
		map[string]any{"id": "broken", "object": "model", "created": created, "owned_by": "rbee", "status": "failed"},
		map[string]any{"id": "lazy", "object": "model", "created": created, "owned_by": "rbee", "status": "not_loaded"},
		map[string]any{"id": "loaded", "object": "model", "created": created, "owned_by": "rbee"},
	}})
}
