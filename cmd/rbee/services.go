package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/hive"
	"github.com/rbee-dev/rbee/hive/bundled"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/progress"
	"github.com/rbee-dev/rbee/queen"
	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// bindQueenFlags adds the queen's flags, bound to f's [queen] and
// [provision] sections.
func bindQueenFlags(fs *flag.FlagSet, f *config.File) {
	q := &f.Queen
	fs.StringVar(&q.HTTP, "http", q.HTTP, "HTTP listen address (queen.http; env RBEE_QUEEN_HTTP or RBEE_HTTP)")
	fs.DurationVar(&q.ShutdownGrace, "shutdown-grace", q.ShutdownGrace, "how long streams may finish after a stop signal before they end with an error (queen.shutdown_grace)")
	fs.DurationVar(&q.DefaultTimeout, "default-timeout", q.DefaultTimeout, "bound of a job, queueing included, when the request sets none (queen.default_timeout)")
	fs.DurationVar(&q.FirstTokenTimeout, "first-token-timeout", q.FirstTokenTimeout, "wait for a job's first event, queueing included (queen.first_token_timeout)")
	fs.DurationVar(&q.IdleTimeout, "stream-idle-timeout", q.IdleTimeout, "longest gap between two events of a stream (queen.idle_timeout)")
	fs.DurationVar(&q.KeepAliveTimeout, "keep-alive-timeout", q.KeepAliveTimeout, "idle HTTP keep-alive connections close after this (queen.keep_alive_timeout)")
	fs.IntVar(&q.DefaultMaxTokens, "default-max-tokens", q.DefaultMaxTokens, "max_tokens of a request that sets none (queen.default_max_tokens)")
	bindAuthFlags(fs, f)
}

// queenConfig is the queen's config from f, with its keys loaded.
func queenConfig(f config.File, subj schemas.Subjects) (queen.Config, error) {
	cfg := f.QueenConfig()
	cfg.Subjects = subj
	cfg.CheckResponseFormat = checkResponseFormat
	return cfg, loadKeys(f, &cfg)
}

// queenApplier applies a reloaded configuration to the queen: its keys,
// then its live settings.
func queenApplier(q *queen.Queen, keys *apikey.Set, log *slog.Logger) applier {
	reloadKeys := keysApplier(keys, log, q.Audit)
	return func(ctx context.Context, old, next config.File) error {
		if err := reloadKeys(ctx, old, next); err != nil {
			return err
		}
		return q.ApplyConfig(ctx, next.QueenConfig())
	}
}

func runQueen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var nf *natsFlags
	l := &configLoader{name: "queen", args: args, sections: config.QueenSections, bind: func(fs *flag.FlagSet, f *config.File) {
		nf = bindNATSFlags(fs, f, "rbee-queen")
		bindQueenFlags(fs, f)
		bindProvisionFlags(fs, f)
	}}
	f, err := l.load(stdout, stderr)
	if err != nil {
		return validated(err)
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	cfg, err := queenConfig(f, subj)
	if err != nil {
		return err
	}
	level := levelOf(f)
	log := newLeveledLogger(stderr, level).With("component", "queen")
	// The queen owns provisioning: its keeper makes the streams and
	// buckets, and makes them again when the bus loses them.
	nc, _, err := nf.connect(ctx, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	reg := newRegistry()
	q, err := queen.New(nc, cfg, log, reg)
	if err != nil {
		return err
	}
	r, err := newReloader(l, f, level, log, reg)
	if err != nil {
		return err
	}
	r.audit = q.Audit
	r.apply = []applier{queenApplier(q, cfg.Keys, log)}
	r.listenOn(nc, subj, "queen", q.ID())
	return runGroup(ctx, actor{"queen", q.Run}, actor{"reload", r.Run})
}

// validated is err, or nil for errValidated: --validate-config found the
// configuration valid.
func validated(err error) error {
	if errors.Is(err, errValidated) {
		return nil
	}
	return err
}

// serveFlags collects repeated --serve NAME=PATH flags into the hive's
// models; the first replaces the models of the file.
type serveFlags struct {
	models  *[]config.Model
	flagged bool
}

func (m *serveFlags) String() string {
	if m.models == nil {
		return ""
	}
	return fmt.Sprint(*m.models)
}

func (m *serveFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || !schemas.ValidModel(name) || path == "" {
		return fmt.Errorf("want NAME=PATH with a model name of letters, digits, '-', '_' or ':', got %q", v)
	}
	if !m.flagged {
		*m.models, m.flagged = nil, true
	}
	*m.models = append(*m.models, config.Model{Name: name, Path: path})
	return nil
}

// modelFlags collects repeated NAME=PATH flags (--catalog).
type modelFlags []hive.ModelSpec

func (m *modelFlags) String() string { return fmt.Sprint(*m) }

func (m *modelFlags) Set(v string) error {
	name, path, ok := strings.Cut(v, "=")
	if !ok || !schemas.ValidModel(name) || path == "" {
		return fmt.Errorf("want NAME=PATH with a model name of letters, digits, '-', '_' or ':', got %q", v)
	}
	*m = append(*m, hive.ModelSpec{Name: name, Path: path})
	return nil
}

// hiveOptions are the hive flags outside the configuration file, and
// where the placement options find the per-worker settings.
type hiveOptions struct {
	replicas *int
	slots    *int
	ctx      *int
	kvTokens *int
	threads  *int
	place    placementOptions
}

// bindHiveFlags adds the hive's flags, bound to f's [hive] section.
func bindHiveFlags(fs *flag.FlagSet, f *config.File, host string) *hiveOptions {
	h := &f.Hive
	if h.ID == "" {
		h.ID = hiveID(host)
	}
	if h.CacheDir == "" {
		h.CacheDir = config.DefaultCacheDir()
	}
	fs.StringVar(&h.ID, "id", h.ID, "hive ID (hive.id; env RBEE_HIVE_ID)")
	fs.Var(&serveFlags{models: &h.Models}, "serve", "serve a model: NAME=PATH to a GGUF file (repeatable; [[hive.models]]; default: the bundled "+bundled.Name+")")
	fs.IntVar(&h.Replicas, "replicas", h.Replicas, "worker processes per model (hive.replicas)")
	fs.IntVar(&h.Slots, "slots", h.Slots, "jobs each worker decodes together in one batch (hive.slots)")
	fs.IntVar(&h.Ctx, "ctx", h.Ctx, "context length per job (hive.ctx; 0: 4096, or what the model was trained for if less)")
	fs.IntVar(&h.KVTokens, "kv-tokens", h.KVTokens, "KV cache per worker in tokens, shared by its jobs (hive.kv_tokens; 0: slots × ctx)")
	fs.IntVar(&h.Threads, "threads", h.Threads, "threads per worker (hive.threads; 0: CPUs divided among the workers)")
	fs.StringVar(&h.CacheDir, "cache-dir", h.CacheDir, "where model files are kept (hive.cache_dir)")
	fs.DurationVar(&h.HeartbeatInterval, "heartbeat-interval", h.HeartbeatInterval, "how often the hive renews its registry key; well below the hives bucket's TTL (hive.heartbeat_interval)")
	fs.DurationVar(&h.StopGrace, "stop-grace", h.StopGrace, "on shutdown, how long workers may drain before their process groups are killed (hive.stop_grace)")
	fs.DurationVar(&h.StopGrace, "graceful-timeout", h.StopGrace, "the former name of --stop-grace")
	fs.DurationVar(&h.OrphanGrace, "orphan-grace", h.OrphanGrace, "workers drain and exit once this hive has been gone this long (hive.orphan_grace; -1s: never)")
	fs.DurationVar(&h.HungTimeout, "hung-timeout", h.HungTimeout, "kill and restart a live worker whose heartbeat stopped this long (hive.hung_timeout; -1s: never)")
	fs.DurationVar(&h.ProgressTimeout, "progress-timeout", h.ProgressTimeout, "kill and restart a busy worker that produced no token this long (hive.progress_timeout; -1s: never)")
	fs.StringVar(&h.WorkerNKey, "worker-nkey", h.WorkerNKey, "nkey seed file of the worker identity, for the hive's workers (hive.worker_nkey)")
	fs.StringVar(&h.WorkerCreds, "worker-creds", h.WorkerCreds, "credentials file the hive's workers connect with (hive.worker_creds)")
	fs.DurationVar(&h.LoadTimeout, "load-timeout", h.LoadTimeout, "kill and restart a worker not ready this long after its start (hive.load_timeout; -1s: never)")
	o := &hiveOptions{replicas: &h.Replicas, slots: &h.Slots, ctx: &h.Ctx, kvTokens: &h.KVTokens, threads: &h.Threads}
	o.place.add(fs)
	return o
}

// hiveModels resolves f's models into specs, installing the bundled model
// where one needs it.
func hiveModels(f config.File) ([]hive.ModelSpec, error) {
	return f.ModelSpecs(func() (string, error) { return bundled.Install(filepath.Join(f.Hive.CacheDir, "models")) })
}

// hiveConfig is the hive's config from f, loaded from the file at path
// (none: ""), which the workers read too; the caller sets what only it
// knows (the server URL, the subjects, the data directory).
func hiveConfig(f config.File, o *hiveOptions, path string) (hive.Config, error) {
	models, err := hiveModels(f)
	if err != nil {
		return hive.Config{}, err
	}
	h := f.Hive
	cfg := hive.Config{
		ID: h.ID, Models: models, HeartbeatInterval: h.HeartbeatInterval, StopGrace: h.StopGrace,
		OrphanGrace: h.OrphanGrace, HungTimeout: h.HungTimeout, ProgressTimeout: h.ProgressTimeout,
		LoadTimeout: h.LoadTimeout, WorkerLogMax: h.WorkerLogMaxBytes,
		Restart: f.RestartPolicy(), ConfigFile: path,
	}
	if cfg.ExtraEnv, err = workerEnv(f, path); err != nil {
		return hive.Config{}, err
	}
	o.place.apply(&cfg, o)
	return cfg, nil
}

// workerEnv is what the hive's workers get on top of its environment: the
// connection settings, and the [worker] and [log] settings, later entries
// winning. Workers that read the hive's file at path get only the settings
// the hive's flags changed: the file and the environment they share say
// the rest, and a reload must find them there, not in a variable fixed at
// the worker's start.
func workerEnv(f config.File, path string) ([]string, error) {
	env := append(natsEnv(), workerIdentityEnv(f.Hive)...)
	if path == "" {
		return append(env, f.WorkerEnv()...), nil
	}
	shared, err := config.Load(path)
	if err != nil {
		return nil, usageError{err}
	}
	same := map[string]bool{}
	for _, kv := range shared.WorkerEnv() {
		same[kv] = true
	}
	for _, kv := range f.WorkerEnv() {
		if !same[kv] {
			env = append(env, kv)
		}
	}
	return env, nil
}

// workerIdentityEnv gives the hive's workers the worker identity, when the
// hive has its seed or credentials: the hive's own identity may not publish
// job events, and a worker's may not send control commands. Set last, it
// wins over the hive's NATS_* variables, which the workers inherit, and over
// the [nats] section of the file they share.
func workerIdentityEnv(h config.Hive) []string {
	inbox := "NATS_INBOX_PREFIX=" + bus.InboxPrefix(bus.RoleWorker)
	others := []string{"NATS_USER=", "NATS_PASSWORD=", "NATS_TOKEN="}
	switch {
	case h.WorkerNKey != "":
		return append(others, "NATS_NKEY="+h.WorkerNKey, "NATS_CREDS=", inbox)
	case h.WorkerCreds != "":
		return append(others, "NATS_CREDS="+h.WorkerCreds, "NATS_NKEY=", inbox)
	}
	return nil
}

// hiveApplier applies a reloaded configuration to the hive: the models it
// serves, with the hive-wide settings (replicas, slots, ...) they take.
func hiveApplier(h *hive.Hive) applier {
	return func(_ context.Context, old, next config.File) error {
		was, err := hiveModels(old)
		if err != nil {
			return err
		}
		models, err := hiveModels(next)
		if err != nil || slices.Equal(was, models) {
			return err
		}
		return h.ApplyConfig(hive.Config{Models: models})
	}
}

func runHive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	host, _ := os.Hostname()
	var (
		nf          *natsFlags
		opts        *hiveOptions
		dataDir     *string
		metricsAddr *string
	)
	l := &configLoader{name: "hive", args: args, sections: config.HiveSections, bind: func(fs *flag.FlagSet, f *config.File) {
		nf = bindNATSFlags(fs, f, "rbee-hive")
		opts = bindHiveFlags(fs, f, host)
		metricsAddr = fs.String("metrics-addr", "", "serve the hive's Prometheus metrics on this address's /metrics, e.g. 127.0.0.1:9101 (default: off)")
		dataDir = fs.String("data-dir", f.Hive.DataDir, "the hive's lock and record of running workers, which a restarted hive adopts (hive.data_dir; default: rbee/hive/<id> in the user's state directory)")
	}}
	f, err := l.load(stdout, stderr)
	if err != nil {
		return validated(err)
	}
	if *dataDir == "" {
		*dataDir = defaultHiveDataDir(f.Hive.ID)
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	level := levelOf(f)
	base := newLeveledLogger(stderr, level) // the hive adds its component and ID
	log := base.With("component", "hive")
	cfg, err := hiveConfig(f, opts, configPath(args))
	if err != nil {
		return err
	}
	// With a listener of its own, the hive serves its workers' metrics.
	cfg.WorkerMetrics = *metricsAddr != ""
	nc, _, err := nf.connectChecked(ctx, log, subj)
	if err != nil {
		return stoppedOr(ctx, err)
	}
	defer nc.Close()
	cfg.ServerURL, cfg.Prefix, cfg.Subjects, cfg.DataDir = serverURL(f.NATS.URL), subj.Prefix, subj, *dataDir
	reg := newRegistry()
	h, err := hive.New(nc, cfg, base, reg)
	if err != nil {
		return err
	}
	r, err := newReloader(l, f, level, log, reg)
	if err != nil {
		return err
	}
	r.apply = []applier{hiveApplier(h)}
	r.reloaded = []func(){func() { h.ReloadWorkers() }}
	r.listenOn(nc, subj, schemas.KindHive, h.ID())
	ma, _, err := metricsActor(*metricsAddr, withWorkers(reg, h, log), log)
	if err != nil {
		return err
	}
	return runGroup(ctx, actor{"hive", h.Run}, actor{"reload", r.Run}, ma)
}

// defaultHiveDataDir is rbee/hive/<id> in the user's state directory
// ($XDG_STATE_HOME, else ~/.local/state), else in the cache directory: one
// per hive ID, so that two hives of one machine each have their own.
func defaultHiveDataDir(id string) string {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		if home, err := os.UserHomeDir(); err == nil {
			base = filepath.Join(home, ".local", "state")
		} else if base, err = os.UserCacheDir(); err != nil {
			base = os.TempDir()
		}
	}
	return filepath.Join(base, "rbee", "hive", id)
}

// natsEnv passes the connection settings a worker needs beyond --server.
func natsEnv() []string {
	var out []string
	for _, k := range []string{"NATS_CREDS", "NATS_NKEY", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CERT", "NATS_KEY", "NATS_CA", "RBEE_LOG_LEVEL"} {
		if v, ok := os.LookupEnv(k); ok {
			out = append(out, k+"="+v)
		}
	}
	return out
}

func runWorker(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	// A SIGHUP, which ends a process by default, may come from the hive
	// while the model loads: it is caught from the start, and the reloader
	// takes it up once running.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var (
		nf                      *natsFlags
		name, path, id, parent  *string
		metricsAddr             *string
		slots, ctxLen, kvTokens *int
		threads                 *int
		orphan                  *time.Duration
	)
	l := &configLoader{name: "worker", args: args, sections: config.WorkerSections, bind: func(fs *flag.FlagSet, f *config.File) {
		nf = bindNATSFlags(fs, f, "rbee-worker")
		w := &f.Worker
		name = fs.String("model-name", "", "model name on the bus (required)")
		path = fs.String("model", "", "GGUF model file (required)")
		id = fs.String("worker-id", "", "worker ID (default: derived from host and PID)")
		parent = fs.String("hive-id", "", "ID of the hive that started this worker")
		slots = fs.Int("slots", 1, "jobs decoded together in one batch")
		ctxLen = fs.Int("ctx", 0, fmt.Sprintf("context length per job (0: %d, or what the model was trained for if less)", config.DefaultContext))
		kvTokens = fs.Int("kv-tokens", 0, "KV cache in tokens, shared by the jobs (0: slots × ctx)")
		threads = fs.Int("threads", 0, "threads (0: one per CPU)")
		metricsAddr = fs.String("metrics-addr", "", "serve the worker's Prometheus metrics on this address's /metrics (default: off)")
		fs.DurationVar(&w.AckWait, "ack-wait", w.AckWait, "job lease: how long a job stays with a worker that stopped renewing it (worker.ack_wait)")
		fs.IntVar(&w.MaxAttempts, "max-attempts", w.MaxAttempts, "deliveries of a job that may run it before it is dead-lettered (-1: no limit); the first worker of a model sets it (worker.max_attempts)")
		fs.DurationVar(&w.HeartbeatInterval, "heartbeat-interval", w.HeartbeatInterval, "how often the worker renews its registry key (worker.heartbeat_interval)")
		fs.DurationVar(&w.ShutdownGrace, "shutdown-grace", w.ShutdownGrace, "how long jobs in hand may finish after a stop signal before they are handed back (worker.shutdown_grace)")
		orphan = fs.Duration("orphan-grace", f.Hive.OrphanGrace, "with --hive-id: drain and exit once the hive has been gone this long (0: never)")
	}}
	// A worker that cannot start as asked never will: its status tells the
	// hive not to try again.
	f, err := l.load(stdout, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) || errors.Is(err, errValidated) {
			return validated(err)
		}
		return cannotStart{err}
	}
	if *name == "" || *path == "" {
		return cannotStart{usageError{errors.New("worker: --model-name and --model are required")}}
	}
	if *id == "" {
		host, _ := os.Hostname()
		*id = fmt.Sprintf("%s-%d", hiveID(host), os.Getpid())
	}
	subj, err := nf.subjects()
	if err != nil {
		return cannotStart{err}
	}
	level := levelOf(f)
	log := newLeveledLogger(stderr, level).With("component", "worker") // the worker adds its IDs
	// A model file that is not there never will be: say so without waiting
	// for NATS, which the load's progress needs.
	if _, err := os.Stat(*path); err != nil {
		return cannotStart{fmt.Errorf("model: %w", err)}
	}
	nc, _, err := nf.connectChecked(ctx, log.With("worker_id", *id), subj)
	if err != nil {
		return stoppedOr(ctx, err)
	}
	defer nc.Close()
	wc := f.Worker
	wcfg := worker.Config{
		ID: *id, HiveID: *parent, Model: *name, Slots: *slots, KVTokens: *kvTokens,
		AckWait: wc.AckWait, MaxAttempts: wc.MaxAttempts, HeartbeatInterval: wc.HeartbeatInterval, Subjects: subj,
		ShutdownGrace: wc.ShutdownGrace, OrphanGrace: max(*orphan, 0),
	}
	m, stats, err := loadWorkerModel(nc, wcfg, *path, infer.Options{Threads: *threads, Logger: log.With("worker_id", *id, "model", *name)}, stderr)
	if err != nil {
		return cannotStart{err}
	}
	defer m.Close()
	if *ctxLen == 0 {
		// A model trained on a short context gets that, without the
		// engine's warning about a longer one.
		*ctxLen = config.DefaultContext
		if trained := m.Hyperparameters().ContextLength; trained > 0 {
			*ctxLen = min(*ctxLen, trained)
		}
	}
	wcfg.ContextLength, wcfg.Load = *ctxLen, stats
	reg := newRegistry()
	if err := modelLoadSeconds(reg, stats.Took); err != nil {
		return err
	}
	// Bound before the worker starts, whose heartbeat tells where.
	ma, metricsURL, err := metricsActor(*metricsAddr, reg, log.With("worker_id", *id))
	if err != nil {
		return err
	}
	wcfg.MetricsURL = metricsURL
	w, err := worker.New(nc, m, wcfg, log, reg)
	if err != nil {
		return cannotStart{err}
	}
	r, err := newReloader(l, f, level, log, reg)
	if err != nil {
		return err
	}
	r.hup = hup
	r.apply = []applier{workerApplier(w, wcfg)}
	r.listenOn(nc, subj, schemas.KindWorker, *id)
	return runGroup(ctx, actor{"worker", w.Run}, actor{"reload", r.Run}, ma)
}

// workerApplier applies a reloaded configuration to the worker: the
// [worker] settings it can change while it runs. The lease and the
// attempts are the jobs consumer's, which the first worker of a model
// made: the reloader names them as needing a restart.
func workerApplier(w *worker.Worker, started worker.Config) applier {
	return func(_ context.Context, _, next config.File) error {
		cfg := started
		cfg.HeartbeatInterval, cfg.ShutdownGrace = next.Worker.HeartbeatInterval, next.Worker.ShutdownGrace
		return w.ApplyConfig(cfg)
	}
}

// loadWorkerModel loads the worker's model, its progress on the bus and,
// for a worker started by hand, as a bar on stderr; a hive's worker is
// followed on the bus (rbee up, rbee worker spawn), not in the hive's log.
func loadWorkerModel(nc *nats.Conn, cfg worker.Config, path string, opts infer.Options, stderr io.Writer) (*infer.Model, worker.LoadStats, error) {
	if cfg.HiveID != "" {
		return worker.LoadModel(nc, cfg, path, opts)
	}
	bar := progress.NewScreen(stderr).Bar("loading " + cfg.Model)
	opts.Progress = func(p infer.LoadProgress) { bar.Update(p.Done, p.Total) }
	m, stats, err := worker.LoadModel(nc, cfg, path, opts)
	if err != nil {
		bar.Done("failed")
		return nil, stats, err
	}
	bar.Done(fmt.Sprintf("loaded %s in %v", progress.Bytes(stats.Bytes), stats.Took.Round(time.Millisecond)))
	return m, stats, nil
}

// cannotStart marks a worker failure no restart can cure: a model file that
// cannot be read or is not supported, bad flags. rbee exits with
// hive.ExitCodeCannotStart.
type cannotStart struct{ error }

func (c cannotStart) Unwrap() error { return c.error }

// stoppedOr is err, or nil when a stop signal ended ctx: stopping a
// component while it still waits to start is a clean exit.
func stoppedOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func serverURL(u string) string {
	if u == "" {
		return bus.DefaultURL
	}
	return u
}

// hiveID turns a host name into a valid ID.
func hiveID(host string) string {
	id := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '-'
	}, host)
	id = strings.Trim(id, "-_")
	if id == "" || len(id) > 64 {
		return "hive"
	}
	return id
}
