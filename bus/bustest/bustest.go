// Package bustest starts real, in-process NATS servers with JetStream for
// tests in other packages.
package bustest

import (
	"context"
	"log/slog"
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
