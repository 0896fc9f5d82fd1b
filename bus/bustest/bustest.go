// Package bustest starts real, in-process NATS servers with JetStream for
// tests in other packages.
package bustest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// startTimeout bounds server start, connect and provisioning on a loaded
// machine; each normally takes milliseconds.
const startTimeout = 30 * time.Second

// RunServer starts a server with JetStream on a random port, storing in a
// test temp dir, and shuts it down when the test ends.
func RunServer(t testing.TB) *server.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	e, err := bus.StartEmbedded(ctx, bus.EmbeddedConfig{Port: -1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatalf("start nats server: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e.Server()
}

// RunCluster starts n JetStream servers named n0, n1, ..., routed to each
// other on loopback in the cluster "rbee-test", and waits until they have
// elected a meta leader that hears from every peer. Each server shuts down
// when the test ends. Every server needs its routes at start (JetStream
// refuses a cluster without them), so the route ports are chosen up front
// rather than by the servers.
func RunCluster(t testing.TB, n int) []*server.Server {
	t.Helper()
	ports := freePorts(t, n)
	routes := make([]string, 0, n)
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	servers := make([]*server.Server, 0, n)
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
			t.Fatalf("cluster server %d: %v", i, err)
		}
		s.Start()
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		if !s.ReadyForConnections(startTimeout) {
			t.Fatalf("cluster server %d not ready within %v", i, startTimeout)
		}
		servers = append(servers, s)
	}
	CheckFor(t, startTimeout, func() error {
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

// ClusterURLs is the servers' client URLs, comma-separated, as clients and
// rbee's --server flag take them.
func ClusterURLs(servers []*server.Server) string {
	urls := make([]string, len(servers))
	for i, s := range servers {
		urls[i] = s.ClientURL()
	}
	return strings.Join(urls, ",")
}

// freePorts returns n distinct ports nothing listens on, for servers
// started right after.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// Connect connects to s and returns the connection and its JetStream
// context; the connection is closed when the test ends.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	// Discard logs: connection callbacks may run after the test has ended,
	// when t.Log would panic.
	nc, err := bus.Connect(ctx, bus.Config{URL: s.ClientURL(), Name: t.Name()}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("connect to nats: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// Provisioned is RunServer, Connect and Provision with default settings
// under the default subject prefix.
func Provisioned(t testing.TB) (*server.Server, *nats.Conn, jetstream.JetStream, schemas.Subjects) {
	t.Helper()
	s := RunServer(t)
	nc, js := Connect(t, s)
	subj, err := schemas.NewSubjects("")
	if err != nil {
		t.Fatalf("subjects: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{}); err != nil {
		t.Fatalf("provision: %v", err)
	}
	return s, nc, js, subj
}

// CheckFor polls f until it returns nil, failing the test with f's last
// error once timeout has passed. Tests wait for conditions with it instead
// of sleeping.
func CheckFor(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
	}
}
