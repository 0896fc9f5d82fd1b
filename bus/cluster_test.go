package bus_test

import (
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

func TestProvisionThreeReplicasInCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	servers := bustest.RunCluster(t, 3)
	_, js := bustest.Connect(t, servers[1])
	subj, _ := schemas.NewSubjects("")
	ctx := testContext(t, 60*time.Second)
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{Replicas: 3}); err != nil {
		t.Fatalf("Provision with 3 replicas: %v", err)
	}
	for _, name := range []string{subj.JobsStream(), subj.EventsStream(), "KV_" + subj.WorkersBucket()} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := s.CachedInfo()
		if info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Errorf("stream %s: %d replicas configured, cluster %+v", name, info.Config.Replicas, info.Cluster)
		}
	}
	if _, err := bus.EnsureJobsConsumer(ctx, js, subj, "m", time.Minute, 3); err != nil {
		t.Fatal(err)
	}
	ack, err := bus.PublishRetry(ctx, js, jobMsg(subj, "m", "clustered"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != subj.JobsStream() {
		t.Errorf("stored in %q", ack.Stream)
	}
}
