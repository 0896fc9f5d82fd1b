package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/hive"
	"github.com/rbee-dev/rbee/hive/bundled"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/queen"
	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func runQueen(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("queen", stderr)
	nf, err := addNATSFlags(fs, "rbee-queen")
	if err != nil {
		return err
	}
	addr := fs.String("http", envOr("RBEE_HTTP", "127.0.0.1:8080"), "HTTP listen address (env RBEE_HTTP)")
	grace := fs.Duration("shutdown-grace", queen.DefaultShutdownGrace, "how long streams may finish after a stop signal before they end with an error")
	prov := addProvisionFlags(fs)
	auth := addAuthFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := queen.Config{HTTPAddr: *addr, ShutdownGrace: *grace, Provisioning: *prov}
	cfg.CheckResponseFormat = checkResponseFormat
	if err := auth.load(&cfg); err != nil {
		return err
	}
	if err := cfg.CheckAuth(); err != nil {
		return usageError{err}
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	log := newLogger(stderr, nf.logLevel).With("component", "queen")
	// The queen owns provisioning: its keeper makes the streams and
	// buckets, and makes them again when the bus loses them.
	nc, _, err := nf.connect(ctx, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg.Subjects = subj
	q, err := queen.New(nc, cfg, log, newRegistry())
	if err != nil {
		return err
	}
	defer reloadOnHangup(cfg.Keys, log, q.Audit)()
	return q.Run(ctx)
}

// modelFlags collects repeated --serve NAME=PATH flags.
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

// hiveOptions are the flags that shape the workers a hive starts.
type hiveOptions struct {
	id       *string
	serve    modelFlags
	replicas *int
	slots    *int
	ctx      *int
	kvTokens *int
	threads  *int
	cacheDir *string
	beat     *time.Duration
	grace    *time.Duration
	orphan   *time.Duration
	hung     *time.Duration
	progress *time.Duration
	place    placementOptions
}

func addHiveFlags(fs *flag.FlagSet, host string) *hiveOptions {
	o := &hiveOptions{}
	o.id = fs.String("id", envOr("RBEE_HIVE_ID", hiveID(host)), "hive ID (env RBEE_HIVE_ID)")
	fs.Var(&o.serve, "serve", "serve a model: NAME=PATH to a GGUF file (repeatable; default: the bundled "+bundled.Name+")")
	o.replicas = fs.Int("replicas", 1, "worker processes per model")
	o.slots = fs.Int("slots", 1, "jobs each worker decodes together in one batch")
	o.ctx = fs.Int("ctx", 4096, "context length per job (0: what the model file says)")
	o.kvTokens = fs.Int("kv-tokens", 0, "KV cache per worker in tokens, shared by its jobs (0: slots × ctx)")
	o.threads = fs.Int("threads", 0, "threads per worker (0: CPUs divided among the workers)")
	o.cacheDir = fs.String("cache-dir", defaultCacheDir(), "where model files are kept")
	o.beat = fs.Duration("heartbeat-interval", hive.DefaultHeartbeatInterval, "how often the hive renews its registry key; well below the hives bucket's TTL")
	o.grace = fs.Duration("graceful-timeout", hive.DefaultStopGrace, "on shutdown, how long workers may drain before their process groups are killed")
	o.orphan = fs.Duration("orphan-grace", hive.DefaultOrphanGrace, "workers drain and exit once this hive has been gone this long (-1s: never)")
	o.hung = fs.Duration("hung-timeout", hive.DefaultHungTimeout, "kill and restart a live worker whose heartbeat stopped this long (-1s: never)")
	o.progress = fs.Duration("progress-timeout", hive.DefaultProgressTimeout, "kill and restart a busy worker that produced no token this long (-1s: never)")
	o.place.add(fs)
	return o
}

// supervision sets the flags' process supervision settings in cfg.
func (o *hiveOptions) supervision(cfg *hive.Config) {
	cfg.StopGrace, cfg.OrphanGrace, cfg.HungTimeout, cfg.ProgressTimeout = *o.grace, *o.orphan, *o.hung, *o.progress
}

// models resolves the flags into specs, installing the bundled model when
// no model was named.
func (o *hiveOptions) models() ([]hive.ModelSpec, error) {
	specs := append([]hive.ModelSpec(nil), o.serve...)
	if len(specs) == 0 {
		path, err := bundled.Install(filepath.Join(*o.cacheDir, "models"))
		if err != nil {
			return nil, err
		}
		specs = []hive.ModelSpec{{Name: bundled.Name, Path: path}}
	}
	threads := *o.threads
	if threads == 0 {
		threads = max(1, runtime.NumCPU()/max(len(specs)**o.replicas, 1))
	}
	for i := range specs {
		specs[i].Replicas, specs[i].Slots, specs[i].ContextLength, specs[i].Threads = *o.replicas, *o.slots, *o.ctx, threads
		specs[i].KVTokens = *o.kvTokens
	}
	return specs, nil
}

func runHive(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("hive", stderr)
	nf, err := addNATSFlags(fs, "rbee-hive")
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	opts := addHiveFlags(fs, host)
	dataDir := fs.String("data-dir", "", "the hive's lock and record of running workers, which a restarted hive adopts (default: rbee/hive/<id> in the user's state directory)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *dataDir == "" {
		*dataDir = defaultHiveDataDir(*opts.id)
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	log := newLogger(stderr, nf.logLevel).With("component", "hive") // the hive adds its ID
	models, err := opts.models()
	if err != nil {
		return err
	}
	nc, _, err := nf.connectChecked(ctx, log, subj)
	if err != nil {
		return stoppedOr(ctx, err)
	}
	defer nc.Close()
	cfg := hive.Config{
		ID: *opts.id, Models: models, ServerURL: serverURL(nf.cfg.URL), Prefix: subj.Prefix,
		ExtraEnv: natsEnv(), Subjects: subj, HeartbeatInterval: *opts.beat, DataDir: *dataDir,
	}
	opts.supervision(&cfg)
	opts.place.apply(&cfg, opts)
	h, err := hive.New(nc, cfg, log, newRegistry())
	if err != nil {
		return err
	}
	return h.Run(ctx)
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

func runWorker(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("worker", stderr)
	nf, err := addNATSFlags(fs, "rbee-worker")
	if err != nil {
		return err
	}
	var (
		name       = fs.String("model-name", "", "model name on the bus (required)")
		path       = fs.String("model", "", "GGUF model file (required)")
		id         = fs.String("worker-id", "", "worker ID (default: derived from host and PID)")
		parentHive = fs.String("hive-id", "", "ID of the hive that started this worker")
		slots      = fs.Int("slots", 1, "jobs decoded together in one batch")
		ctxLen     = fs.Int("ctx", 0, "context length per job (0: the model's own)")
		kvTokens   = fs.Int("kv-tokens", 0, "KV cache in tokens, shared by the jobs (0: slots × ctx)")
		ackWait    = fs.Duration("ack-wait", worker.DefaultAckWait, "job lease: how long a job stays with a worker that stopped renewing it")
		attempts   = fs.Int("max-attempts", worker.DefaultMaxAttempts, "deliveries of a job that may run it before it is dead-lettered (-1: no limit); the first worker of a model sets it")
		threads    = fs.Int("threads", 0, "threads (0: one per CPU)")
		drain      = fs.Duration("shutdown-grace", worker.DefaultShutdownGrace, "how long jobs in hand may finish after a stop signal before they are handed back")
		orphan     = fs.Duration("orphan-grace", hive.DefaultOrphanGrace, "with --hive-id: drain and exit once the hive has been gone this long (0: never)")
	)
	// A worker that cannot start as asked never will: its status tells the
	// hive not to try again.
	if err := parse(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
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
	log := newLogger(stderr, nf.logLevel).With("component", "worker") // the worker adds its IDs
	m, err := infer.Load(*path, infer.Options{Threads: *threads, Logger: log.With("worker_id", *id, "model", *name)})
	if err != nil {
		return cannotStart{err}
	}
	defer m.Close()
	nc, _, err := nf.connectChecked(ctx, log.With("worker_id", *id), subj)
	if err != nil {
		return stoppedOr(ctx, err)
	}
	defer nc.Close()
	w, err := worker.New(nc, m, worker.Config{
		ID: *id, HiveID: *parentHive, Model: *name, Slots: *slots, ContextLength: *ctxLen, KVTokens: *kvTokens,
		AckWait: *ackWait, MaxAttempts: *attempts, Subjects: subj, ShutdownGrace: *drain, OrphanGrace: *orphan,
	}, log, newRegistry())
	if err != nil {
		return cannotStart{err}
	}
	return w.Run(ctx)
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

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
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

func defaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "rbee")
	}
	return filepath.Join(os.TempDir(), "rbee")
}
