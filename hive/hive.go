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
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/bus"
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
	log      *slog.Logger // the hive's own lines: component=hive
	base     *slog.Logger // the workers' lines, which say their component
	auditor  *bus.Auditor
	hostname string
	starter  *execStarter
	metrics  *metrics
	scraper  *workerScraper // WorkerMetrics
	env      []string
	catalog  map[string]ModelSpec // every model the hive can start, by name
	models   []string             // the catalog's names, configuration order
	started  atomic.Bool
	kick     chan struct{} // asks the reconcile loop to converge now

	mu       sync.Mutex
	wanted   map[string]ModelSpec // the desired state: worker ID to its model
	procs    map[string]*proc     // the supervised workers, by ID
	order    []*proc              // procs in the order they were made, for Workers
	rejected map[string]rejection // a model's last preflight refusal
	draining bool                 // no spawns (drain command)
	stopping bool                 // shutdown begun: no spawns, no starts
	runCtx   context.Context      // Run's, while it runs: the workers' parent
	runWG    *sync.WaitGroup      // the workers' goroutines
	calls    sync.WaitGroup       // control requests answered on goroutines of their own
	pm       *placementMetrics
	sup      supervision // shared by the worker supervisors
}

// New validates cfg, fills in its defaults and registers the hive's metrics
// with reg (nil: not registered). The hive's lines carry component=hive and
// hive_id, which logger should not have already; the workers' lines it
// re-emits keep their own component. Nothing starts until Run.
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
	pm, err := newPlacementMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("hive metrics: %w", err)
	}
	base := logger.With("hive_id", cfg.ID)
	logger = logger.With("component", "hive", "hive_id", cfg.ID)
	hostname, err := os.Hostname()
	if err != nil {
		logger.Warn("no hostname for heartbeats", "err", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("hive: jetstream: %w", err)
	}
	h := &Hive{
		nc: nc, js: js, cfg: cfg, log: logger, base: base, hostname: hostname, starter: newExecStarter(),
		metrics: m, pm: pm, env: append([]string(nil), cfg.ExtraEnv...), catalog: map[string]ModelSpec{},
		kick: make(chan struct{}, 1), wanted: map[string]ModelSpec{}, procs: map[string]*proc{},
		rejected: map[string]rejection{},
	}
	if h.auditor, err = bus.NewAuditor(nc, cfg.Subjects, "hive", cfg.ID, logger); err != nil {
		return nil, fmt.Errorf("hive: %w", err)
	}
	if reg != nil {
		if err := reg.Register(h.auditor.DroppedCounter("hive")); err != nil {
			return nil, fmt.Errorf("hive metrics: %w", err)
		}
	}
	for _, model := range append(append([]ModelSpec(nil), cfg.Models...), cfg.Catalog...) {
		if _, ok := h.catalog[model.Name]; !ok {
			h.models = append(h.models, model.Name)
		}
		h.catalog[model.Name] = model
	}
	wanted, err := h.wantedSet(cfg.Models)
	if err != nil {
		return nil, fmt.Errorf("hive config: %w", err)
	}
	h.wanted = wanted
	h.scraper = newWorkerScraper(h)
	h.mu.Lock()
	h.converge()
	h.mu.Unlock()
	return h, nil
}

// audit records an event about the hive or one of its workers in the
// hive's chain of the audit trail; the auditor publishes it apart, so that
// auditing never holds up supervision.
func (h *Hive) audit(ev schemas.AuditEvent) {
	ev.Time, ev.HiveID = time.Now().UTC(), h.cfg.ID
	h.auditor.Record(ev)
}

// ID is the hive's ID, as given or derived from the hostname.
func (h *Hive) ID() string { return h.cfg.ID }

// ApplyConfig applies what of cfg can change while the hive runs: the
// models it serves, which SetWanted reconciles (the added start, the removed
// stop, the others carry on). The rest needs a restart.
func (h *Hive) ApplyConfig(cfg Config) error { return h.SetWanted(cfg.Models) }

// ReloadWorkers asks every live worker process to reload its
// configuration (SIGHUP, which rbee worker takes as a reload) and returns
// how many it asked: after a reload of the hive's, its workers, which read
// the same file (Config.ConfigFile), follow. A signal, not a bus request:
// the hive holds the processes, and the signal reaches them with the bus
// away, with no reply to route.
func (h *Hive) ReloadWorkers() int {
	h.mu.Lock()
	procs := slices.Clone(h.order)
	h.mu.Unlock()
	n := 0
	for _, p := range procs {
		asked, err := p.w.reload()
		if err != nil {
			h.log.Warn("ask a worker to reload its configuration", "worker_id", p.w.spec.ID, "err", err)
			continue
		}
		if asked {
			n++
		}
	}
	h.log.Info("asked the workers to reload their configuration", "workers", n)
	return n
}

// Run starts the wanted workers, supervises them, converges them to the
// wanted set as it changes, publishes heartbeats and serves the control
// endpoints. When ctx ends or a shutdown command arrives it stops all
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
	// One hive holds the data directory's lock, so one writes its chain;
	// the auditor outlives the workers, whose ends it records.
	defer h.auditor.Start()()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)

	svc, err := h.startService(ctx, stop)
	if err != nil {
		return err
	}
	defer func() {
		if err := svc.Stop(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			h.log.Warn("stop the control service", "err", err)
		}
	}()
	beats, err := h.followWorkers()
	if err != nil {
		return err
	}
	defer func() {
		if err := beats.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			h.log.Warn("unsubscribe from worker heartbeats", "err", err)
		}
	}()
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	if err := h.nc.FlushWithContext(fctx); err != nil {
		h.log.Warn("control subscription not confirmed by the server; starting workers anyway", "err", err)
	}
	cancel()

	h.log.Info("hive starting", "workers", len(h.Workers()), "executable", h.cfg.Executable)
	var workers, wg sync.WaitGroup
	h.mu.Lock()
	h.runCtx, h.runWG = ctx, &workers
	h.converge()
	h.mu.Unlock()
	wg.Go(func() { h.heartbeats(ctx) })
	wg.Go(func() { h.reconcileLoop(ctx) })
	<-ctx.Done()
	// Spawns are refused from here on.
	h.mu.Lock()
	h.stopping = true
	h.mu.Unlock()
	began := h.shutdownBegan(context.Cause(ctx))
	wg.Wait()
	workers.Wait()
	h.calls.Wait()
	h.shutdownDone(began)
	return nil
}

// Workers returns a snapshot of every supervised worker's status, in the
// order they were added (the configuration's, for the first ones).
func (h *Hive) Workers() []WorkerStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]WorkerStatus, len(h.order))
	for i, p := range h.order {
		out[i] = p.w.snapshot()
	}
	return out
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
	for _, st := range h.Workers() {
		if st.State == StateRunning {
			hb.Workers = append(hb.Workers, st.ID)
		}
	}
	// Every model of the catalog, loaded or not: the queen asks for the
	// ones no worker serves (on-demand load).
	hb.Models = append(hb.Models, h.models...)
	h.mu.Lock()
	hb.Draining = h.draining || h.stopping
	h.mu.Unlock()
	hb.Failed = h.failedWorkers()
	return hb
}
