package bus_test

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

func TestRestartKeepsJobsAndClientsReconnect(t *testing.T) {
	dir := t.TempDir()
	ctx := testContext(t, 60*time.Second)
	e, err := bus.StartEmbedded(ctx, bus.EmbeddedConfig{Port: -1, DataDir: dir, ServerName: "first"})
	if err != nil {
		t.Fatal(err)
	}
	port := e.Server().Addr().(*net.TCPAddr).Port
	logs := newLogWatch()
	nc, err := bus.Connect(ctx, bus.Config{URL: e.ClientURL()}, logs.logger())
	if err != nil {
		e.Shutdown()
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := schemas.NewSubjects("")
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"j1", "j2", "j3"} {
		if _, err := bus.PublishRetry(ctx, js, jobMsg(subj, "m", id)); err != nil {
			t.Fatal(err)
		}
	}
	e.Shutdown()
	logs.waitFor(t, "disconnected", 10*time.Second)

	e, err = bus.StartEmbedded(ctx, bus.EmbeddedConfig{Port: port, DataDir: dir, ServerName: "second"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	logs.waitFor(t, "reconnected", 20*time.Second)
	if got := nc.ConnectedServerName(); got != "second" {
		t.Errorf("reconnected to %q, want the restarted server", got)
	}
	if n := streamMsgs(t, js, subj.JobsStream()); n != 3 {
		t.Fatalf("after restart the stream holds %d jobs, want 3", n)
	}
	// The same job ID is still remembered as a duplicate.
	ack, err := bus.PublishRetry(ctx, js, jobMsg(subj, "m", "j1"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Error("re-published job after restart was not detected as a duplicate")
	}
}

func TestStartEmbeddedReportsPortInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// No deadline: only the server's own failure can end the wait.
	_, err = bus.StartEmbedded(t.Context(), bus.EmbeddedConfig{Port: l.Addr().(*net.TCPAddr).Port, DataDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "failed to start") {
		t.Fatalf("StartEmbedded on a busy port: %v", err)
	}
}

func TestEmbeddedRemovesItsTempDir(t *testing.T) {
	e, err := bus.StartEmbedded(testContext(t, 30*time.Second), bus.EmbeddedConfig{Port: -1})
	if err != nil {
		t.Fatal(err)
	}
	dir := e.Server().JetStreamConfig().StoreDir
	if _, err := os.Stat(dir); err != nil {
		e.Shutdown()
		t.Fatalf("store dir: %v", err)
	}
	e.Shutdown()
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("store dir %s after Shutdown: %v, want it removed", dir, err)
	}
}
