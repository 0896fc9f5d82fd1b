package bus_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/bus"
)

func TestConnectWaitsForServer(t *testing.T) {
	port := freePort(t)
	logs := newLogWatch()
	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	ctx := testContext(t, 30*time.Second)
	go func() {
		nc, err := bus.Connect(ctx, bus.Config{URL: fmt.Sprintf("nats://127.0.0.1:%d", port), Name: "late"}, logs.logger())
		done <- result{nc, err}
	}()
	// Start the server only once Connect has failed at least once.
	logs.waitFor(t, "retrying", 10*time.Second)
	e, err := bus.StartEmbedded(ctx, bus.EmbeddedConfig{Port: port, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()

	r := <-done
	if r.err != nil {
		t.Fatalf("Connect: %v", r.err)
	}
	defer r.nc.Close()
	if !r.nc.IsConnected() {
		t.Fatalf("status %v, want connected", r.nc.Status())
	}
	if got, want := r.nc.ConnectedUrl(), e.ClientURL(); got != want {
		t.Errorf("connected to %s, want %s", got, want)
	}
}

func TestConnectGivesUpWhenCancelled(t *testing.T) {
	port := freePort(t)
	logs := newLogWatch()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		nc, err := bus.Connect(ctx, bus.Config{URL: fmt.Sprintf("nats://127.0.0.1:%d", port)}, logs.logger())
		if nc != nil {
			nc.Close()
		}
		done <- err
	}()
	logs.waitFor(t, "retrying", 10*time.Second)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Connect error %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Connect did not return after its context was cancelled")
	}
}

func TestConnectFailsFastOnBadCredentials(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, Authorization: "s3cret", NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	// No deadline: only a permanent-error check can end this Connect.
	ctx := t.Context()
	_, err = bus.Connect(ctx, bus.Config{URL: s.ClientURL(), Token: "wrong"}, nil)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("Connect with a wrong token: %v, want %v", err, nats.ErrAuthorization)
	}
	nc, err := bus.Connect(ctx, bus.Config{URL: s.ClientURL(), Token: "s3cret"}, nil)
	if err != nil {
		t.Fatalf("Connect with the right token: %v", err)
	}
	nc.Close()
}

func TestConnectRejectsBadConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tc := range []struct {
		name string
		cfg  bus.Config
		want string
	}{
		{"cert without key", bus.Config{TLSCert: missing}, "certificate and the key"},
		{"key without cert", bus.Config{TLSKey: missing}, "certificate and the key"},
		{"missing nkey seed", bus.Config{NKey: missing}, "nkey"},
		{"missing CA", bus.Config{TLSCA: missing}, "rootCA"},
		{"missing creds", bus.Config{URL: "nats://127.0.0.1:1", Creds: missing}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// No deadline: a retry loop here would hang the test.
			nc, err := bus.Connect(t.Context(), tc.cfg, nil)
			if err == nil {
				nc.Close()
				t.Fatal("Connect succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}
