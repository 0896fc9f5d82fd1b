package bus_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/bus"
)

// A worker's load progress reaches hives and clients; a worker cannot
// speak as a hive there.
func TestWorkerProgressReachesHiveAndClient(t *testing.T) {
	s := newSecured(t)
	var v violations
	wnc, _ := s.connectWith(t, bus.RoleWorker, &v)
	var subs []*nats.Subscription
	for _, role := range []bus.Role{bus.RoleHive, bus.RoleClient} {
		nc, _ := s.connect(t, role)
		sub, err := nc.SubscribeSync(s.subj.AllProgress("worker"))
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		subs = append(subs, sub)
	}
	if err := wnc.Publish(s.subj.Progress("worker", "w1"), []byte(`{"phase":"loading"}`)); err != nil {
		t.Fatal(err)
	}
	for i, sub := range subs {
		if m, err := sub.NextMsg(5 * time.Second); err != nil || string(m.Data) != `{"phase":"loading"}` {
			t.Errorf("subscriber %d: %v, %v", i, m, err)
		}
	}
	if err := wnc.Publish(s.subj.Progress("hive", "h1"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, s.subj.Progress("hive", "h1"))
}
