package bus_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

func jobMsg(subj schemas.Subjects, model, id string) *nats.Msg {
	m := nats.NewMsg(subj.Jobs(model))
	m.Header.Set(schemas.HeaderMsgID, id)
	m.Data = []byte(`{"id":"` + id + `"}`)
	return m
}

func streamMsgs(t *testing.T, js jetstream.JetStream, name string) uint64 {
	t.Helper()
	s, err := js.Stream(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

func TestProvisionIsIdempotentAndUpdates(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 30*time.Second)
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{}); err != nil {
		t.Fatalf("second Provision: %v", err)
	}

	jobs, err := js.Stream(ctx, subj.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	cfg := jobs.CachedInfo().Config
	if cfg.Retention != jetstream.WorkQueuePolicy || cfg.Discard != jetstream.DiscardNew ||
		cfg.Storage != jetstream.FileStorage || cfg.MaxMsgs != bus.DefaultJobsMaxMsgs ||
		cfg.MaxAge != bus.DefaultJobsMaxAge || cfg.Duplicates != bus.DefaultDuplicateWindow ||
		len(cfg.Subjects) != 1 || cfg.Subjects[0] != subj.AllJobs() {
		t.Errorf("jobs stream config %+v", cfg)
	}
	events, err := js.Stream(ctx, subj.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if cfg := events.CachedInfo().Config; cfg.Retention != jetstream.LimitsPolicy ||
		cfg.MaxAge != bus.DefaultEventsMaxAge || cfg.Subjects[0] != subj.AllAudit() {
		t.Errorf("events stream config %+v", cfg)
	}
	dlq, err := js.Stream(ctx, subj.DeadLetterStream())
	if err != nil {
		t.Fatal(err)
	}
	if cfg := dlq.CachedInfo().Config; cfg.Retention != jetstream.LimitsPolicy || cfg.Storage != jetstream.FileStorage ||
		cfg.MaxAge != bus.DefaultDeadLetterAge || cfg.Subjects[0] != subj.AllDeadLetters() {
		t.Errorf("dead-letter stream config %+v", cfg)
	}
	hives, err := js.KeyValue(ctx, subj.HivesBucket())
	if err != nil {
		t.Fatal(err)
	}
	if st, err := hives.Status(ctx); err != nil || st.TTL() != bus.DefaultHiveTTL || st.LimitMarkerTTL() != bus.DefaultHiveTTL {
		t.Errorf("hives bucket: %v %v", st, err)
	}
	kv, err := js.KeyValue(ctx, subj.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.TTL() != bus.DefaultWorkerTTL || st.History() != 1 || st.LimitMarkerTTL() != bus.DefaultWorkerTTL {
		t.Errorf("workers bucket TTL %v history %d marker TTL %v", st.TTL(), st.History(), st.LimitMarkerTTL())
	}

	changed := bus.Provisioning{JobsMaxMsgs: 5, JobsMaxAge: 10 * time.Minute, WorkerTTL: 3 * time.Second,
		EventsMaxAge: time.Hour, EventsMaxBytes: 1 << 20}
	if err := bus.Provision(ctx, js, subj, changed); err != nil {
		t.Fatalf("Provision with changed settings: %v", err)
	}
	info, err := jobs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxMsgs != 5 || info.Config.MaxAge != 10*time.Minute {
		t.Errorf("jobs stream not updated: max msgs %d, max age %v", info.Config.MaxMsgs, info.Config.MaxAge)
	}
	if info, err := events.Info(ctx); err != nil || info.Config.MaxAge != time.Hour || info.Config.MaxBytes != 1<<20 {
		t.Errorf("events stream not updated: %+v %v", info.Config, err)
	}
	if st, err := kv.Status(ctx); err != nil || st.TTL() != 3*time.Second {
		t.Errorf("workers bucket not updated: TTL %v, err %v", st.TTL(), err)
	}
}

func TestProvisionRejectsBadSettings(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	for _, tc := range []struct {
		p    bus.Provisioning
		want string
	}{
		{bus.Provisioning{Replicas: -1}, "replicas"},
		{bus.Provisioning{Replicas: 7}, "replicas"},
		{bus.Provisioning{JobsMaxMsgs: -5}, "jobs max messages"},
		{bus.Provisioning{JobsMaxAge: time.Millisecond}, "jobs max age"},
		{bus.Provisioning{JobsMaxAge: time.Minute, DuplicateWindow: time.Hour}, "duplicate window"},
		{bus.Provisioning{WorkerTTL: 500 * time.Millisecond}, "worker TTL"},
		{bus.Provisioning{EventsMaxAge: -time.Hour}, "events max age"},
		{bus.Provisioning{HiveTTL: time.Millisecond}, "hive TTL"},
		{bus.Provisioning{DeadLetterMaxAge: time.Second}, "dead letter max age"},
	} {
		err := bus.Provision(t.Context(), js, subj, tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Provision(%+v) = %v, want an error about %s", tc.p, err, tc.want)
		}
	}
}

func TestWorkQueueRemovesAckedJob(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 30*time.Second)
	cons, err := bus.EnsureJobsConsumer(ctx, js, subj, "llama3:8b", 30*time.Second, 5)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	if cfg.Durable != subj.JobsConsumer("llama3:8b") || cfg.FilterSubject != subj.Jobs("llama3:8b") ||
		cfg.AckPolicy != jetstream.AckExplicitPolicy || cfg.AckWait != 30*time.Second ||
		cfg.MaxDeliver != 5 || cfg.MaxAckPending < 1000 {
		t.Errorf("consumer config %+v", cfg)
	}
	// A job for another model stays out of this consumer's reach.
	if _, err := bus.PublishRetry(ctx, js, jobMsg(subj, "other", "job-0")); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.PublishRetry(ctx, js, jobMsg(subj, "llama3:8b", "job-1")); err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []jetstream.Msg
	for m := range batch.Messages() {
		got = append(got, m)
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Headers().Get(schemas.HeaderMsgID) != "job-1" {
		t.Fatalf("fetched %d messages, want job-1", len(got))
	}
	if n := streamMsgs(t, js, subj.JobsStream()); n != 2 {
		t.Fatalf("before ack the stream holds %d jobs, want 2", n)
	}
	if err := got[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if n := streamMsgs(t, js, subj.JobsStream()); n != 1 {
		t.Fatalf("after ack the stream holds %d jobs, want 1 (the other model's)", n)
	}

	// Ensuring again binds to the consumer as it is: a second worker with
	// other settings does not rewrite the first one's.
	cons, err = bus.EnsureJobsConsumer(ctx, js, subj, "llama3:8b", 2*time.Minute, 3)
	if err != nil {
		t.Fatalf("EnsureJobsConsumer again: %v", err)
	}
	if cfg := cons.CachedInfo().Config; cfg.AckWait != 30*time.Second || cfg.MaxDeliver != 5 {
		t.Errorf("consumer rewritten: ack wait %v, max deliver %d; want the first 30s and 5", cfg.AckWait, cfg.MaxDeliver)
	}
}

// Check names what is missing; with everything provisioned it passes.
func TestCheck(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 30*time.Second)
	if err := bus.Check(ctx, js, subj); err != nil {
		t.Fatalf("provisioned: %v", err)
	}
	if err := js.DeleteStream(ctx, subj.StreamsStream()); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, subj.WorkersBucket()); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, subj.DeadLetterStream()); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, subj.HivesBucket()); err != nil {
		t.Fatal(err)
	}
	err := bus.Check(ctx, js, subj)
	if !errors.Is(err, bus.ErrNotProvisioned) || !strings.Contains(err.Error(), subj.StreamsStream()) ||
		!strings.Contains(err.Error(), subj.WorkersBucket()) || !strings.Contains(err.Error(), subj.DeadLetterStream()) ||
		!strings.Contains(err.Error(), subj.HivesBucket()) {
		t.Errorf("Check with a stream and a bucket gone: %v", err)
	}
}

func TestEnsureJobsConsumerRejectsBadInput(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	for _, tc := range []struct {
		model      string
		ackWait    time.Duration
		maxDeliver int
	}{
		{"bad.model", time.Minute, 3},
		{"", time.Minute, 3},
		{"m", 0, 3},
		{"m", time.Minute, 0},
		{"m", time.Minute, -2},
	} {
		if _, err := bus.EnsureJobsConsumer(t.Context(), js, subj, tc.model, tc.ackWait, tc.maxDeliver); err == nil {
			t.Errorf("EnsureJobsConsumer(%q, %v, %d) succeeded", tc.model, tc.ackWait, tc.maxDeliver)
		}
	}
}

func TestFullQueueRefusesNewJobs(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 30*time.Second)
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{JobsMaxMsgs: 2}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := bus.PublishRetry(ctx, js, jobMsg(subj, "m", id)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := bus.PublishRetry(ctx, js, jobMsg(subj, "m", "c"))
	if err == nil {
		t.Fatal("publish to a full queue succeeded")
	}
	if !bus.IsQueueFull(err) {
		t.Fatalf("IsQueueFull(%v) = false", err)
	}
	if ctx.Err() != nil {
		t.Fatal("a full queue was retried until the deadline")
	}
	if n := streamMsgs(t, js, subj.JobsStream()); n != 2 {
		t.Fatalf("stream holds %d jobs, want 2", n)
	}
	if bus.IsQueueFull(errors.New("maximum messages exceeded")) || bus.IsQueueFull(nil) {
		t.Error("IsQueueFull is true for an error that is not from JetStream")
	}
}

// One model's full queue leaves the others' room.
func TestModelQueuesAreBoundedApart(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 30*time.Second)
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{JobsMaxMsgs: 100, JobsMaxPerModel: 2}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := bus.PublishRetry(ctx, js, jobMsg(subj, "busy", id)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bus.PublishRetry(ctx, js, jobMsg(subj, "busy", "c")); !bus.IsQueueFull(err) {
		t.Fatalf("third job for a model with room for 2: %v, want a full queue", err)
	}
	for _, id := range []string{"d", "e"} {
		if _, err := bus.PublishRetry(ctx, js, jobMsg(subj, "idle", id)); err != nil {
			t.Fatalf("a job for another model: %v", err)
		}
	}
}

func TestDuplicateJobIsDropped(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 30*time.Second)
	first, err := bus.PublishRetry(ctx, js, jobMsg(subj, "m", "same"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := bus.PublishRetry(ctx, js, jobMsg(subj, "m", "same"))
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !second.Duplicate || second.Sequence != first.Sequence {
		t.Errorf("acks %+v then %+v, want the second a duplicate of the first", first, second)
	}
	if n := streamMsgs(t, js, subj.JobsStream()); n != 1 {
		t.Fatalf("stream holds %d jobs, want 1", n)
	}
}

func TestWorkerKeyExpiresAfterTTL(t *testing.T) {
	_, _, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 30*time.Second)
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{WorkerTTL: time.Second}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, subj.WorkersBucket())
	if err != nil {
		t.Fatal(err)
	}
	w, err := kv.Watch(ctx, "w1", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := kv.Put(ctx, "w1", []byte(`{"worker_id":"w1"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "w1"); err != nil {
		t.Fatalf("fresh key: %v", err)
	}
	checkFor(t, 15*time.Second, func() error {
		_, err := kv.Get(ctx, "w1")
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil
		}
		return errors.New("w1 still in the bucket")
	})
	// The watcher sees the put, then the expiry marker.
	var ops []jetstream.KeyValueOp
	for len(ops) < 2 {
		select {
		case e := <-w.Updates():
			if e != nil {
				ops = append(ops, e.Operation())
			}
		case <-ctx.Done():
			t.Fatalf("watcher saw only %v", ops)
		}
	}
	if ops[0] != jetstream.KeyValuePut || ops[1] != jetstream.KeyValuePurge {
		t.Errorf("watcher saw %v, want a put then a purge", ops)
	}
}

// countingJS passes each publish result to a channel, to watch retries.
type countingJS struct {
	jetstream.JetStream
	attempts chan error
}

func (c countingJS) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := c.JetStream.PublishMsg(ctx, m, opts...)
	select {
	case c.attempts <- err:
	default:
	}
	return ack, err
}

func TestPublishRetryWaitsForStream(t *testing.T) {
	s := bustest.RunServer(t)
	_, js := bustest.Connect(t, s)
	subj, _ := schemas.NewSubjects("")
	ctx := testContext(t, 30*time.Second)
	cjs := countingJS{JetStream: js, attempts: make(chan error, 1000)}
	type result struct {
		ack *jetstream.PubAck
		err error
	}
	done := make(chan result, 1)
	go func() {
		ack, err := bus.PublishRetry(ctx, cjs, jobMsg(subj, "m", "early"))
		done <- result{ack, err}
	}()
	if err := <-cjs.attempts; !errors.Is(err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("first attempt: %v, want %v", err, jetstream.ErrNoStreamResponse)
	}
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("PublishRetry: %v", r.err)
	}
	if r.ack.Stream != subj.JobsStream() {
		t.Errorf("stored in %q, want %q", r.ack.Stream, subj.JobsStream())
	}
}

func TestPublishRetryStopsWithContext(t *testing.T) {
	s := bustest.RunServer(t)
	_, js := bustest.Connect(t, s)
	subj, _ := schemas.NewSubjects("")
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, err := bus.PublishRetry(ctx, js, jobMsg(subj, "m", "never"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("PublishRetry with no stream: %v, want %v", err, context.DeadlineExceeded)
	}
}
