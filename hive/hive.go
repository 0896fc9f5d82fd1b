// Package hive is rbee's per-machine agent. It runs one worker process per
// model replica (the rbee binary itself, as "rbee worker ..."), restarts
// workers that exit with a backoff, reports the machine's resources in a
// heartbeat, and on shutdown stops every worker gracefully: SIGTERM, a grace
// period, then SIGKILL of the worker's process group, so that nothing is left
// behind.
package hive

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/schemas"
)

// hiveHeartbeatSchema is the Rbee-Schema header of a hive heartbeat.
const hiveHeartbeatSchema = "hive_heartbeat/v1"

// flushTimeout bounds the wait for the server to confirm the control
// subscription; a hive whose server is away starts its workers anyway.
const flushTimeout = 5 * time.Second

// busTimeout bounds one put or delete of the hive's registry key.
const busTimeout = 5 * time.Second

// errShutdownRequested is the cause of a stop asked for on the control subject.
var errShutdownRequested = errors.New("shutdown requested on the control subject")

// Hive supervises the worker processes of one machine.
type Hive struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	hives    jetstream.KeyValue // the hives bucket, once found
	cfg      Config
	log      *slog.Logger
	hostname string
	starter  *execStarter
	metrics  *metrics
	env      []string
	workers  []*worker
	started  atomic.Bool
	sup      supervision // shared by the worker supervisors
}

// New validates cfg, fills in its defaults and registers the hive's metrics
// with reg (nil: not registered). Nothing starts until Run.
func New(nc *nats.Conn, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Hive, error) {
	if nc == nil {
		return nil, errors.New("hive: no NATS connection")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("hive config: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("hive metrics: %w", err)
	}
	logger = logger.With("hive_id", cfg.ID)
	hostname, err := os.Hostname()
	if err != nil {
		logger.Warn("no hostname for heartbeats", "err", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("hive: jetstream: %w", err)
	}
	h := &Hive{nc: nc, js: js, cfg: cfg, log: logger, hostname: hostname, starter: newExecStarter(),
		metrics: m, env: append([]string(nil), cfg.ExtraEnv...)}
	ids := map[string]bool{}
	for _, model := range cfg.Models {
		for r := range model.Replicas {
			id := workerID(cfg.ID, model.Name, r)
			if ids[id] {
				return nil, fmt.Errorf("hive config: model %s replica %d: worker ID %s is already taken", model.Name, r, id)
			}
			ids[id] = true
			h.workers = append(h.workers, h.newWorker(id, model))
		}
	}
	return h, nil
}

// audit publishes an event about one of the hive's workers; the events
// stream keeps it. Core NATS: a lost record must not hold up supervision.
func (h *Hive) audit(ev schemas.AuditEvent) {
	ev.Time, ev.HiveID = time.Now().UTC(), h.cfg.ID
	data, err := json.Marshal(ev)
	if err == nil {
		err = h.nc.Publish(h.cfg.Subjects.Events(ev.Type), data)
	}
	if err != nil {
		h.log.Warn("publish audit event", "type", ev.Type, "worker_id", ev.WorkerID, "err", err)
	}
}

// ID is the hive's ID, as given or derived from the hostname.
func (h *Hive) ID() string { return h.cfg.ID }

// Run starts every worker, supervises them, publishes heartbeats and answers
// control commands. When ctx ends or a shutdown command arrives it stops all
// workers, waits until each is gone and returns nil. It runs once per Hive.
func (h *Hive) Run(ctx context.Context) error {
	if !h.started.CompareAndSwap(false, true) {
		return errors.New("hive: Run called twice")
	}
	// Locked first: a second hive on the directory must not touch the bus.
	st, err := h.openDataDir()
	if err != nil {
		return err
	}
	defer st.close()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)

	subject := h.cfg.Subjects.Control(schemas.KindHive, h.cfg.ID)
	sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) { h.control(m, stop) })
	if err != nil {
		return fmt.Errorf("hive: subscribe to %s: %w", subject, err)
	}
	defer func() {
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			h.log.Warn("unsubscribe from control subject", "err", err)
		}
	}()
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	if err := h.nc.FlushWithContext(fctx); err != nil {
		h.log.Warn("control subscription not confirmed by the server; starting workers anyway", "err", err)
	}
	cancel()

	h.log.Info("hive starting", "workers", len(h.workers), "executable", h.cfg.Executable)
	var wg sync.WaitGroup
	for _, w := range h.workers {
		wg.Go(func() { w.run(ctx) })
	}
	wg.Go(func() { h.heartbeats(ctx) })
	<-ctx.Done()
	began := h.shutdownBegan(context.Cause(ctx))
	wg.Wait()
	h.shutdownDone(began)
	return nil
}

// Workers returns a snapshot of every worker's status, in configuration order.
func (h *Hive) Workers() []WorkerStatus {
	out := make([]WorkerStatus, len(h.workers))
	for i, w := range h.workers {
		out[i] = w.snapshot()
	}
	return out
}

// control answers a command on the hive's control subject.
func (h *Hive) control(m *nats.Msg, stop context.CancelCauseFunc) {
	var c schemas.Control
	err := json.Unmarshal(m.Data, &c)
	if err != nil {
		err = schemas.Errorf(schemas.CodeInvalidRequest, "decode control message: %v", err)
	} else {
		err = c.Validate()
	}
	var reply schemas.ControlReply
	if err != nil {
		var se *schemas.Error
		if !errors.As(err, &se) {
			se = schemas.Errorf(schemas.CodeInternal, "%v", err)
		}
		reply.Error = se
		h.log.Warn("bad control message", "err", err)
	} else {
		reply.OK = true
		h.log.Info("control command", "command", c.Command, "reason", c.Reason)
	}
	if m.Reply != "" {
		data, merr := json.Marshal(reply)
		if merr == nil {
			merr = m.Respond(data)
		}
		if merr != nil {
			h.log.Warn("answer control message", "err", merr)
		}
	}
	if reply.OK {
		stop(errShutdownRequested)
	}
}

// heartbeats publishes the hive's heartbeat now and every interval until
// ctx ends, and keeps its key in the hives bucket, whose TTL removes a hive
// that stopped; a hive that stops cleanly removes its key itself.
func (h *Hive) heartbeats(ctx context.Context) {
	subject := h.cfg.Subjects.Heartbeat(schemas.KindHive, h.cfg.ID)
	t := time.NewTicker(h.cfg.HeartbeatInterval)
	defer t.Stop()
	defer h.removeKey()
	for {
		if err := h.publishHeartbeat(ctx, subject); err != nil {
			h.log.Warn("publish heartbeat", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// registry is the hives bucket. A hive supervises its workers whether or
// not the bucket is there, and looks for it again at the next beat.
func (h *Hive) registry(ctx context.Context) (jetstream.KeyValue, error) {
	if h.hives == nil {
		kv, err := h.js.KeyValue(ctx, h.cfg.Subjects.HivesBucket())
		if err != nil {
			return nil, fmt.Errorf("hives bucket %s: %w", h.cfg.Subjects.HivesBucket(), err)
		}
		h.hives = kv
	}
	return h.hives, nil
}

func (h *Hive) removeKey() {
	ctx, cancel := context.WithTimeout(context.Background(), busTimeout)
	defer cancel()
	kv, err := h.registry(ctx)
	if err == nil {
		err = kv.Delete(ctx, h.cfg.ID)
	}
	if err != nil {
		h.log.Warn("delete the hive's registry key; it expires with the bucket's TTL", "err", err)
	}
}

func (h *Hive) publishHeartbeat(ctx context.Context, subject string) error {
	hb := h.heartbeat()
	data, err := json.Marshal(hb)
	if err != nil {
		return fmt.Errorf("encode heartbeat: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, busTimeout)
	defer cancel()
	kv, err := h.registry(pctx)
	if err == nil {
		_, err = kv.Put(pctx, h.cfg.ID, data)
	}
	if err != nil {
		h.log.Warn("put the hive's registry key", "err", err)
	}
	msg := nats.NewMsg(subject)
	msg.Header.Set(schemas.HeaderSchema, hiveHeartbeatSchema)
	msg.Data = data
	if err := h.nc.PublishMsg(msg); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// heartbeat describes the machine and the workers running on it now.
func (h *Hive) heartbeat() schemas.HiveHeartbeat {
	hb := schemas.HiveHeartbeat{
		HiveID:   h.cfg.ID,
		Hostname: h.hostname,
		CPUs:     runtime.NumCPU(),
		Workers:  []string{},
		Time:     time.Now().UTC(),
	}
	var err error
	if hb.MemoryBytes, hb.FreeBytes, err = memory(); err != nil {
		h.log.Warn("read memory size", "err", err)
	}
	for _, w := range h.workers {
		if st := w.snapshot(); st.State == StateRunning {
			hb.Workers = append(hb.Workers, st.ID)
		}
	}
	for _, m := range h.cfg.Models {
		hb.Models = append(hb.Models, m.Name)
	}
	hb.Failed = h.failedWorkers()
	return hb
}
