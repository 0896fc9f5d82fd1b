package bus_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

func TestLiveWorkersSkipsJunkAndDeletedKeys(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, subj.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := bus.LiveWorkers(ctx, kv, nil); err != nil || len(got) != 0 {
		t.Fatalf("empty bucket: %v, %v", got, err)
	}
	put := func(key string, v any) {
		data, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	good := schemas.WorkerHeartbeat{WorkerID: "w1", Model: "m", State: schemas.WorkerReady, Slots: 1}
	put("w1", good)
	put("w2", schemas.WorkerHeartbeat{WorkerID: "w2", Model: "m", State: schemas.WorkerReady, Slots: 2})
	put("junk", "not a heartbeat")
	put("bad", schemas.WorkerHeartbeat{WorkerID: "bad", Model: "m", State: "asleep", Slots: 1})
	if err := kv.Delete(ctx, "w2"); err != nil {
		t.Fatal(err)
	}
	got, err := bus.LiveWorkers(ctx, kv, nil)
	if err != nil || len(got) != 1 || got[0].WorkerID != "w1" {
		t.Errorf("LiveWorkers = %+v, %v; want only w1", got, err)
	}
}

func TestLiveHivesSkipsJunk(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 10*time.Second)
	kv, err := js.KeyValue(ctx, subj.HivesBucket())
	if err != nil {
		t.Fatal(err)
	}
	for key, v := range map[string]any{
		"h1":   schemas.HiveHeartbeat{HiveID: "h1", Hostname: "box", CPUs: 2, Workers: []string{"w1"}},
		"junk": "not a heartbeat",
		"bad":  schemas.HiveHeartbeat{HiveID: "no such id", CPUs: 1},
	} {
		data, _ := json.Marshal(v)
		if _, err := kv.Put(ctx, key, data); err != nil {
			t.Fatal(err)
		}
	}
	got, err := bus.LiveHives(ctx, kv, nil)
	if err != nil || len(got) != 1 || got[0].HiveID != "h1" || got[0].Workers[0] != "w1" {
		t.Errorf("LiveHives = %+v, %v; want only h1", got, err)
	}
}
