package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// externalServer is an ordinary nats-server with JetStream, configured
// with what rbee nats-config prints for a fresh set of identities.
func externalServer(t *testing.T) (*server.Server, *bus.Identities, schemas.Subjects) {
	t.Helper()
	dir := t.TempDir()
	ids, err := bus.LoadIdentities(filepath.Join(dir, "nkeys"))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := schemas.NewSubjects("")
	conf := fmt.Sprintf("listen: 127.0.0.1:-1\njetstream: {store_dir: %q}\n", filepath.Join(dir, "js")) + natsServerAuthorization(ids, subj)
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("nats-server cannot read the configuration: %v\n%s", err, conf)
	}
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return srv, ids, subj
}

// A queen and a hive deployed as DEPLOYMENT.md shows, each with its own
// identity and the hive handing its workers the worker's, serve a request
// on a server that gives each only its least privilege.
func TestDeployedIdentitiesServe(t *testing.T) {
	srv, ids, _ := externalServer(t)
	as := func(role bus.Role, extra ...string) []string {
		return append([]string{"NATS_NKEY=" + ids.SeedFile(role), "NATS_INBOX_PREFIX=" + bus.InboxPrefix(role)}, extra...)
	}
	httpAddr := freeAddr(t)
	queen := startEnv(t, as(bus.RoleQueen), "queen", "--server", srv.ClientURL(), "--http", httpAddr)
	hive := startEnv(t, as(bus.RoleHive, "RBEE_HIVE_WORKER_NKEY="+ids.SeedFile(bus.RoleWorker)),
		"hive", "--server", srv.ClientURL(), "--id", "deployed", "--serve", "stories260K="+modelPath,
		"--ctx", "256", "--threads", "1", "--cache-dir", t.TempDir(), "--data-dir", t.TempDir())
	// A worker without its identity never answers: each try is bounded.
	client := &http.Client{Timeout: 10 * time.Second}
	var text string
	poll(t, 60*time.Second, func() error {
		resp, err := client.Post("http://"+httpAddr+"/v1/completions", "application/json",
			strings.NewReader(`{"model":"stories260K","prompt":"Once upon a time","max_tokens":8,"temperature":0}`))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var out struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || len(out.Choices) != 1 {
			return fmt.Errorf("completion: status %d, %v", resp.StatusCode, err)
		}
		text = out.Choices[0].Text
		return nil
	})
	if !strings.HasPrefix(text, ", there was") {
		t.Errorf("completion %q", text)
	}
	stop(t, hive, syscall.SIGTERM)
	stop(t, queen, syscall.SIGTERM)
}

// The configuration rbee nats-config prints gives an ordinary nats-server
// the permissions rbee up's embedded one has: an anonymous connection is
// refused, a worker cannot queue a job, the operator can.
func TestNATSConfigForAnExternalServer(t *testing.T) {
	srv, ids, subj := externalServer(t)
	if nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("an anonymous connection was accepted")
	}
	connect := func(role bus.Role, errs chan<- error) *nats.Conn {
		opt, err := nats.NkeyOptionFromSeed(ids.SeedFile(role))
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(srv.ClientURL(), opt, nats.CustomInboxPrefix(bus.InboxPrefix(role)),
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
		if err != nil {
			t.Fatalf("connect as %s: %v", role, err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	operatorErrs, workerErrs := make(chan error, 8), make(chan error, 8)
	operator := connect(bus.RoleOperator, operatorErrs)
	jobs, err := operator.SubscribeSync(subj.AllJobs())
	if err != nil {
		t.Fatal(err)
	}
	if err := operator.Flush(); err != nil {
		t.Fatal(err)
	}
	worker := connect(bus.RoleWorker, workerErrs)
	if err := worker.Publish(subj.Jobs("m"), []byte("worker")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-workerErrs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subj.Jobs("m")) {
			t.Errorf("worker publishing a job: %v, want a permissions violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the server did not refuse the worker's job")
	}
	if err := operator.Publish(subj.Jobs("m"), []byte("operator")); err != nil {
		t.Fatal(err)
	}
	// The worker's job, published first, was dropped: the first to
	// arrive is the operator's.
	if msg, err := jobs.NextMsg(5 * time.Second); err != nil || string(msg.Data) != "operator" {
		t.Fatalf("the operator's job: %v, %v", msg, err)
	}
	if n, _, err := jobs.Pending(); err != nil || n != 0 {
		t.Errorf("%d more jobs arrived (%v), want none", n, err)
	}
}

// A command that picks rbee up's identity by itself still reaches a server
// without users (one that refuses nkeys), by connecting without it.
func TestDefaultIdentityOnAnOpenServer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nkeys")
	if _, err := bus.LoadIdentities(dir); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RBEE_NKEYS_DIR", dir)
	srv, _, _, _ := bustest.Provisioned(t)
	out := rbeeOut(t, "workers", "ls", "--server", srv.ClientURL(), "--json")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("workers ls: %q, want an empty list", out)
	}
}
