package bus_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// secured is an embedded server that knows only rbee's identities, with
// its streams provisioned by the queen's.
type secured struct {
	e    *bus.Embedded
	ids  *bus.Identities
	subj schemas.Subjects
}

func newSecured(t *testing.T) *secured {
	t.Helper()
	ids, err := bus.LoadIdentities(filepath.Join(t.TempDir(), "nkeys"))
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := schemas.NewSubjects("")
	ctx := testContext(t, 30*time.Second)
	e, err := bus.StartEmbedded(ctx, bus.EmbeddedConfig{Port: -1, DataDir: t.TempDir(), Users: ids.Users(subj)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	s := &secured{e: e, ids: ids, subj: subj}
	_, js := s.connect(t, bus.RoleQueen)
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{}); err != nil {
		t.Fatalf("provision as the queen: %v", err)
	}
	return s
}

// violations collects the permission errors the server sends a connection.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) add(_ *nats.Conn, _ *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrPermissionViolation) {
		v.mu.Lock()
		v.errs = append(v.errs, err.Error())
		v.mu.Unlock()
	}
}

func (v *violations) waitFor(t *testing.T, what string) {
	t.Helper()
	checkFor(t, 5*time.Second, func() error {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, e := range v.errs {
			if strings.Contains(e, what) {
				return nil
			}
		}
		return errors.New("no permissions violation naming " + what + " yet; got " + strings.Join(v.errs, "; "))
	})
}

func (s *secured) connectWith(t *testing.T, role bus.Role, v *violations) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(s.ids.SeedFile(role))
	if err != nil {
		t.Fatal(err)
	}
	opts := []nats.Option{opt, nats.CustomInboxPrefix(bus.InboxPrefix(role)), nats.PermissionErrOnSubscribe(true)}
	if v != nil {
		opts = append(opts, nats.ErrorHandler(v.add))
	}
	nc, err := nats.Connect(s.e.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

func (s *secured) connect(t *testing.T, role bus.Role) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return s.connectWith(t, role, nil)
}

func TestUnauthenticatedConnectionIsRefused(t *testing.T) {
	s := newSecured(t)
	nc, err := nats.Connect(s.e.ClientURL(), nats.MaxReconnects(0))
	if err == nil {
		nc.Close()
		t.Fatal("an anonymous connection was accepted")
	}
	if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("anonymous connection: %v, want an authorization error", err)
	}
}

func TestWorkerIdentityCannotQueueJobsReadAuditOrControl(t *testing.T) {
	s := newSecured(t)
	ctx := testContext(t, 30*time.Second)
	var v violations
	nc, js := s.connectWith(t, bus.RoleWorker, &v)

	// Publish a job: the server drops it, so the stream never acks.
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	_, err := js.Publish(pctx, s.subj.Jobs("m"), []byte(`{}`))
	cancel()
	if err == nil {
		t.Fatal("a worker queued a job")
	}
	v.waitFor(t, s.subj.Jobs("m"))
	_, qjs := s.connect(t, bus.RoleQueen)
	if str, err := qjs.Stream(ctx, s.subj.JobsStream()); err != nil || str.CachedInfo().State.Msgs != 0 {
		t.Fatalf("jobs stream: %v, %d messages, want none", err, str.CachedInfo().State.Msgs)
	}

	// Read the audit trail: neither a consumer nor a subscription.
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = js.OrderedConsumer(cctx, s.subj.EventsStream(), jetstream.OrderedConsumerConfig{})
	cancel()
	if err == nil {
		t.Error("a worker made a consumer on the audit stream")
	}
	sub, err := nc.SubscribeSync(s.subj.AllAudit())
	if err == nil {
		_, err = sub.NextMsg(2 * time.Second)
	}
	if !errors.Is(err, nats.ErrPermissionViolation) {
		t.Errorf("worker subscribing to the audit trail: %v, want a permissions violation", err)
	}

	// Send a control command to a hive.
	if err := nc.Publish(s.subj.HiveControl("h1", "shutdown"), []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, s.subj.HiveControl("h1", "shutdown"))

	// What a worker does do is allowed: its heartbeat key, its job events.
	kv, err := js.KeyValue(ctx, s.subj.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "w1", []byte(`{}`)); err != nil {
		t.Errorf("worker heartbeat key: %v", err)
	}
	if _, err := js.Publish(ctx, s.subj.JobEvents("q1", "job-1"), []byte(`[]`)); err != nil {
		t.Errorf("worker job events: %v", err)
	}
}

// The operator asks a worker over its control subject (rbee config reload
// --worker) and gets its answer, which the worker may send only as the
// answer.
func TestWorkerAnswersItsControlRequests(t *testing.T) {
	s := newSecured(t)
	var v violations
	wnc, _ := s.connectWith(t, bus.RoleWorker, &v)
	subject := s.subj.Control(schemas.KindWorker, "w1") + ".reload"
	sub, err := wnc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond([]byte("reloaded")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := wnc.Flush(); err != nil {
		t.Fatal(err)
	}
	onc, _ := s.connect(t, bus.RoleOperator)
	reply, err := onc.Request(subject, nil, 5*time.Second)
	if err != nil || string(reply.Data) != "reloaded" {
		t.Fatalf("request to the worker's control subject: %v, %v; want its answer", reply, err)
	}
	// Answering is not publishing: the operator's inbox is not the worker's to write.
	if err := wnc.Publish(bus.InboxPrefix(bus.RoleOperator)+".x", []byte("unasked")); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, bus.InboxPrefix(bus.RoleOperator)+".x")
}

// A worker reads a job's events back, oldest first, as it does to take
// the job over; it cannot read a queued job (whose message carries the
// job's event key) but by pulling it from the shared consumer, nor the
// jobs the queen records with their keys.
func TestWorkerIdentityReadsJobEventsButNoQueuedJob(t *testing.T) {
	s := newSecured(t)
	ctx := testContext(t, 30*time.Second)
	var v violations
	_, js := s.connectWith(t, bus.RoleWorker, &v)
	subject := s.subj.JobEvents("q1", "job-1")
	for _, body := range []string{"one", "two"} {
		if _, err := js.Publish(ctx, subject, []byte(body)); err != nil {
			t.Fatalf("worker job events: %v", err)
		}
	}
	str, err := js.Stream(ctx, s.subj.StreamsStream())
	if err != nil {
		t.Fatal(err)
	}
	for seq, want := range map[uint64]string{1: "one", 2: "two"} {
		msg, err := str.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if err != nil || string(msg.Data) != want {
			t.Errorf("worker reading message %d of a job's events: %v, %v; want %q", seq, msg, err, want)
		}
	}

	_, qjs := s.connect(t, bus.RoleQueen)
	if _, err := bus.EnsureJobsConsumer(ctx, qjs, s.subj, "m", time.Minute, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := qjs.Publish(ctx, s.subj.Jobs("m"), []byte(`{"event_key":"secret"}`)); err != nil {
		t.Fatal(err)
	}
	jobs, err := qjs.Stream(ctx, s.subj.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	// Nothing reads the stream's messages in place: neither the direct
	// get nor the stream's own get answers the worker.
	for _, read := range []func(context.Context) error{
		func(ctx context.Context) error {
			_, err := js.Conn().RequestWithContext(ctx, "$JS.API.DIRECT.GET."+s.subj.JobsStream(), []byte(`{"seq":1}`))
			return err
		},
		func(ctx context.Context) error {
			_, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+s.subj.JobsStream(), []byte(`{"seq":1}`))
			return err
		},
		func(ctx context.Context) error {
			kv, err := js.KeyValue(ctx, s.subj.IdempotencyBucket())
			if err == nil {
				_, err = kv.Get(ctx, "k")
			}
			return err
		},
	} {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := read(rctx)
		cancel()
		if err == nil {
			t.Error("a worker read a queued job or the jobs the queen records")
		}
	}
	v.waitFor(t, "$JS.API.DIRECT.GET."+s.subj.JobsStream())
	v.waitFor(t, "$JS.API.STREAM.MSG.GET."+s.subj.JobsStream())
	// A consumer of its own overlaps the shared one, which a work queue
	// refuses: the only way to the job is to pull it, and hold its lease.
	_, err = js.CreateConsumer(ctx, s.subj.JobsStream(), jetstream.ConsumerConfig{
		Name: "spy", FilterSubject: s.subj.Jobs("m"), AckPolicy: jetstream.AckExplicitPolicy})
	if err == nil {
		t.Error("a worker made a consumer of its own on a model's jobs")
	}
	if info, err := jobs.Info(ctx); err != nil || info.State.Msgs != 1 {
		t.Errorf("jobs stream: %v, %v; want the job still queued", info, err)
	}
}

func TestClientIdentityCannotReadOthersStreams(t *testing.T) {
	s := newSecured(t)
	nc, _ := s.connect(t, bus.RoleClient)
	for _, subject := range []string{">", s.subj.AllJobEvents(), s.subj.JobEvents("q1", "job-1"),
		bus.InboxPrefix(bus.RoleQueen) + ".>", "_INBOX.>", s.subj.AllAudit()} {
		sub, err := nc.SubscribeSync(subject)
		if err == nil {
			_, err = sub.NextMsg(2 * time.Second)
		}
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("client subscribing to %s: %v, want a permissions violation", subject, err)
		}
	}
	// Its own requests work: the reply comes to its own inbox.
	qnc, _ := s.connect(t, bus.RoleQueen)
	if _, err := qnc.Subscribe(s.subj.Infer(), func(m *nats.Msg) { _ = m.Respond([]byte("ok")) }); err != nil {
		t.Fatal(err)
	}
	if err := qnc.Flush(); err != nil {
		t.Fatal(err)
	}
	if reply, err := nc.Request(s.subj.Infer(), []byte("{}"), 5*time.Second); err != nil || string(reply.Data) != "ok" {
		t.Fatalf("client request: %v, %v", reply, err)
	}
}

func TestIdentitiesPersistAndRefuseOpenSeeds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nkeys")
	first, err := bus.LoadIdentities(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := bus.LoadIdentities(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range bus.Roles() {
		if first.PublicKey(role) == "" || first.PublicKey(role) != again.PublicKey(role) {
			t.Errorf("%s: keys %q then %q, want one stable key", role, first.PublicKey(role), again.PublicKey(role))
		}
		info, err := os.Stat(first.SeedFile(role))
		if err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s seed: %v, mode %v, want 0600", role, err, info.Mode().Perm())
		}
	}
	if err := os.Chmod(first.SeedFile(bus.RoleWorker), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.LoadIdentities(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable seed: %v, want a refusal naming the fix", err)
	}
}
