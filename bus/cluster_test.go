package bus_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// runCluster starts n JetStream servers, routed to each other on free
// ports, and waits until they have elected a meta leader. Every server needs
// its routes at start (JetStream refuses a cluster without them), so the
// route ports are chosen up front rather than by the servers.
func runCluster(t *testing.T, n int) []*server.Server {
	t.Helper()
	ports := freePorts(t, n)
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var servers []*server.Server
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
			Cluster:    server.ClusterOpts{Name: "rbee-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server %d not ready", i)
		}
		servers = append(servers, s)
	}
	checkFor(t, 30*time.Second, func() error {
		// The leader must also have heard from every peer, or placing a
		// three-replica stream fails with "peer offline".
		for _, s := range servers {
			if s.JetStreamIsLeader() {
				if peers := s.JetStreamClusterPeers(); len(peers) != len(servers) {
					return fmt.Errorf("meta leader sees %d of %d peers", len(peers), len(servers))
				}
				return nil
			}
		}
		return errors.New("no JetStream meta leader")
	})
	return servers
}

func TestProvisionThreeReplicasInCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	servers := runCluster(t, 3)
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
