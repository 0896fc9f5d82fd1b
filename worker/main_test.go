package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

const (
	modelPath = "../infer/testdata/stories260K.gguf"
	modelName = "stories260K"
	// waitLong bounds anything a test waits for on a loaded machine.
	waitLong = 30 * time.Second
)

// testModel is loaded once: every worker in the tests shares it, as the
// slots of one worker do.
var testModel *infer.Model

func TestMain(m *testing.M) {
	model, err := infer.Load(modelPath, infer.Options{Threads: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testModel = model
	code := m.Run()
	if err := model.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close model:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkFor polls f until it returns nil or timeout has passed.
var checkFor = bustest.CheckFor

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), waitLong)
	t.Cleanup(cancel)
	return ctx
}

// bed is a provisioned server with a client connection, as the queen
// would hold one.
type bed struct {
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	subj schemas.Subjects
	kv   jetstream.KeyValue
}

func newBed(t *testing.T) *bed {
	t.Helper()
	srv, nc, js, subj := bustest.Provisioned(t)
	kv, err := js.KeyValue(testContext(t), subj.WorkersBucket())
	if err != nil {
		t.Fatalf("workers bucket: %v", err)
	}
	return &bed{srv: srv, nc: nc, js: js, subj: subj, kv: kv}
}

// running is a worker whose Run goroutine the test owns.
type running struct {
	w    *worker.Worker
	cfg  worker.Config
	reg  *prometheus.Registry
	stop context.CancelFunc
	done chan error
}

// startWorker runs a worker on its own connection and waits until its
// heartbeat says ready. The worker is stopped when the test ends.
func (b *bed) startWorker(t *testing.T, cfg worker.Config) *running {
	t.Helper()
	return b.startWorkerOn(t, testModel, cfg)
}

// startWorkerOn is startWorker with a model of the test's own.
func (b *bed) startWorkerOn(t *testing.T, model *infer.Model, cfg worker.Config) *running {
	t.Helper()
	nc, _ := bustest.Connect(t, b.srv)
	if cfg.ID == "" {
		cfg.ID = "w1"
	}
	if cfg.Model == "" {
		cfg.Model = modelName
	}
	cfg.Subjects = b.subj
	reg := prometheus.NewRegistry()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := worker.New(nc, model, cfg, log, reg)
	if err != nil {
		t.Fatalf("new worker: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{w: w, cfg: cfg, reg: reg, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
			r.done <- err // for a test that waits after its own stop
		case <-time.After(waitLong):
			t.Errorf("worker did not stop within %v", waitLong)
		}
	})
	b.waitState(t, cfg.ID, func(hb schemas.WorkerHeartbeat) error {
		if hb.State != schemas.WorkerReady {
			return fmt.Errorf("state %q, want ready", hb.State)
		}
		return nil
	})
	return r
}

// wait stops the worker and waits for Run to return nil.
func (r *running) wait(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatalf("worker did not stop within %v", waitLong)
	}
}

// waitState polls the worker's heartbeat key until ok accepts it.
func (b *bed) waitState(t *testing.T, id string, ok func(schemas.WorkerHeartbeat) error) schemas.WorkerHeartbeat {
	t.Helper()
	var hb schemas.WorkerHeartbeat
	checkFor(t, waitLong, func() error {
		e, err := b.kv.Get(context.Background(), id)
		if err != nil {
			return fmt.Errorf("heartbeat key %s: %w", id, err)
		}
		hb = schemas.WorkerHeartbeat{}
		if err := json.Unmarshal(e.Value(), &hb); err != nil {
			return fmt.Errorf("decode heartbeat: %w", err)
		}
		if err := hb.Validate(); err != nil {
			return fmt.Errorf("heartbeat: %w", err)
		}
		return ok(hb)
	})
	return hb
}

// testOwner owns the jobs the tests submit: their events go under it.
const testOwner = "tests"

// submit queues job as the queen does, with its events stream under
// testOwner, and returns a reader of those events.
func (b *bed) submit(t *testing.T, job schemas.Job) *events {
	t.Helper()
	job.Stream = b.subj.JobEvents(testOwner, job.ID)
	if job.Model == "" {
		job.Model = modelName
	}
	data, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	r := b.read(t, job.ID)
	b.submitRaw(t, job.ID, data)
	return r
}

// submitRaw queues data, which need not be a valid job, on the model's
// work queue.
func (b *bed) submitRaw(t *testing.T, id string, data []byte) {
	t.Helper()
	msg := nats.NewMsg(b.subj.Jobs(modelName))
	msg.Header.Set(schemas.HeaderMsgID, id)
	msg.Data = data
	if _, err := b.js.PublishMsg(testContext(t), msg); err != nil {
		t.Fatalf("queue job %s: %v", id, err)
	}
}

// events reads one job's events from the events stream, as the queen does:
// in order, only what the stream stored.
type events struct {
	t    *testing.T
	msgs chan []byte
	buf  []schemas.Event
	subj string
}

func (b *bed) read(t *testing.T, jobID string) *events {
	t.Helper()
	subject := b.subj.JobEvents(testOwner, jobID)
	cons, err := b.js.OrderedConsumer(testContext(t), b.subj.StreamsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
	})
	if err != nil {
		t.Fatalf("read the events of %s: %v", jobID, err)
	}
	r := &events{t: t, msgs: make(chan []byte, 4096), subj: subject}
	cc, err := cons.Consume(func(msg jetstream.Msg) { r.msgs <- msg.Data() })
	if err != nil {
		t.Fatalf("read the events of %s: %v", jobID, err)
	}
	t.Cleanup(cc.Stop)
	return r
}

// tryNext returns the next event, or false when none comes within wait.
func (r *events) tryNext(wait time.Duration) (schemas.Event, bool) {
	r.t.Helper()
	for len(r.buf) == 0 {
		select {
		case data := <-r.msgs:
			var err error
			if r.buf, err = schemas.DecodeEvents(r.buf, data); err != nil {
				r.t.Fatalf("events %q: %v", data, err)
			}
		case <-time.After(wait):
			return schemas.Event{}, false
		}
	}
	ev := r.buf[0]
	r.buf = r.buf[1:]
	return ev, true
}

// next reads one event, failing the test if none comes in time.
func (r *events) next() schemas.Event {
	r.t.Helper()
	ev, ok := r.tryNext(waitLong)
	if !ok {
		r.t.Fatalf("no event on %s within %v", r.subj, waitLong)
	}
	return ev
}

// drain reads events until the terminal one, checking that seq counts
// from 0 without gaps and that exactly the last event is an end or error.
func drain(t *testing.T, r *events, seen ...schemas.Event) []schemas.Event {
	t.Helper()
	evs := seen
	for len(evs) == 0 || !evs[len(evs)-1].Terminal() {
		evs = append(evs, r.next())
	}
	for i, ev := range evs {
		if ev.Seq != i {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
	return evs
}

// text joins the text of token events.
func text(events []schemas.Event) string {
	var b strings.Builder
	for _, ev := range events {
		b.WriteString(ev.Text)
	}
	return b.String()
}

// firstToken waits for a job's first token event.
func firstToken(t *testing.T, r *events) schemas.Event {
	t.Helper()
	ev := r.next()
	if ev.Type != schemas.EventToken {
		t.Fatalf("first event: %+v, want a token event", ev)
	}
	return ev
}

// wantError checks that the last event is an error with code.
func wantError(t *testing.T, events []schemas.Event, code schemas.Code) {
	t.Helper()
	last := events[len(events)-1]
	if last.Type != schemas.EventError || last.Error.Code != code {
		t.Fatalf("last event %+v (error %+v), want error %s", last, last.Error, code)
	}
}

// waitQueueEmpty waits until the work queue holds nothing and the consumer
// has nothing outstanding: every job was acked or terminated.
func (b *bed) waitQueueEmpty(t *testing.T) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	checkFor(t, waitLong, func() error {
		ctx := context.Background()
		s, err := b.js.Stream(ctx, b.subj.JobsStream())
		if err != nil {
			return err
		}
		si, err := s.Info(ctx)
		if err != nil {
			return err
		}
		c, err := s.Consumer(ctx, b.subj.JobsConsumer(modelName))
		if err != nil {
			return err
		}
		if info, err = c.Info(ctx); err != nil {
			return err
		}
		if si.State.Msgs != 0 || info.NumAckPending != 0 || info.NumPending != 0 {
			return fmt.Errorf("stream holds %d messages; consumer: %d pending, %d awaiting ack",
				si.State.Msgs, info.NumPending, info.NumAckPending)
		}
		return nil
	})
	return info
}

// isKeyGone reports whether err says a KV key does not exist.
func isKeyGone(err error) bool {
	return errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted)
}
