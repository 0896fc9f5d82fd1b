// Package config is rbee's configuration file: one TOML file with a section
// per component, overridden by RBEE_... (and the nats CLI's NATS_...)
// environment variables, which cmd/rbee's flags override in turn. It holds
// the defaults, the strict decoding and the validation of every section, and
// the rules that span components (a hive's stop grace must outlast its
// workers' drain), and maps each section onto its component's Config.
//
// Every field carries its documentation in tags, from which docs/CONFIG.md
// is generated (go generate ./internal/config): toml and env name it, help
// says what it does, allowed what it may be, secret masks it, and live
// marks what a reload applies while the process runs.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/caarlos0/env/v11"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/hive"
	"github.com/rbee-dev/rbee/queen"
	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

//go:generate go run ./gendoc ../../docs/CONFIG.md

// File is the whole configuration.
type File struct {
	Log       Log       `toml:"log" envPrefix:"RBEE_LOG_"`
	NATS      NATS      `toml:"nats"`
	Queen     Queen     `toml:"queen" envPrefix:"RBEE_QUEEN_"`
	Hive      Hive      `toml:"hive" envPrefix:"RBEE_HIVE_"`
	Worker    Worker    `toml:"worker" envPrefix:"RBEE_WORKER_"`
	Provision Provision `toml:"provision" envPrefix:"RBEE_PROVISION_"`
}

// Log configures the logs of every component.
type Log struct {
	Level string `toml:"level" env:"LEVEL" live:"true" help:"log level; a reload applies it at once" allowed:"debug, info, warn, error"`
}

// NATS is how every component connects to NATS. The variables are the nats
// CLI's.
type NATS struct {
	URL         string `toml:"url" env:"NATS_URL" help:"NATS server URLs, comma-separated (empty: nats://127.0.0.1:4222)"`
	Creds       string `toml:"creds" env:"NATS_CREDS" help:"credentials file (user JWT and nkey seed)"`
	NKey        string `toml:"nkey" env:"NATS_NKEY" help:"nkey seed file"`
	User        string `toml:"user" env:"NATS_USER" help:"user name"`
	Password    string `toml:"password" env:"NATS_PASSWORD" help:"password (shown masked)" secret:"true"`
	Token       string `toml:"token" env:"NATS_TOKEN" help:"token (shown masked)" secret:"true"`
	TLSCert     string `toml:"tls_cert" env:"NATS_CERT" help:"client certificate for mutual TLS"`
	TLSKey      string `toml:"tls_key" env:"NATS_KEY" help:"client key for mutual TLS"`
	TLSCA       string `toml:"tls_ca" env:"NATS_CA" help:"CA certificate that verifies the server"`
	InboxPrefix string `toml:"inbox_prefix" env:"NATS_INBOX_PREFIX" help:"reply subject prefix instead of _INBOX"`
	Prefix      string `toml:"prefix" env:"RBEE_PREFIX" help:"rbee's subject prefix" allowed:"letters, digits, '-', '_', dots between tokens"`
}

// Queen configures the orchestrator.
type Queen struct {
	HTTP              string        `toml:"http" env:"HTTP" help:"HTTP listen address" allowed:"host:port"`
	ID                string        `toml:"id" env:"ID" help:"queen ID (empty: queen- and random letters)" allowed:"1-128 letters, digits, '-', '_'"`
	ShutdownGrace     time.Duration `toml:"shutdown_grace" env:"SHUTDOWN_GRACE" help:"how long streams may finish after a stop signal" allowed:"> 0; best above the workers' drain"`
	DefaultTimeout    time.Duration `toml:"default_timeout" env:"DEFAULT_TIMEOUT" live:"true" help:"bound of a job, queueing included, when the request sets none" allowed:"> 0"`
	FirstTokenTimeout time.Duration `toml:"first_token_timeout" env:"FIRST_TOKEN_TIMEOUT" live:"true" help:"wait for a job's first event, queueing included" allowed:"> 0"`
	IdleTimeout       time.Duration `toml:"idle_timeout" env:"IDLE_TIMEOUT" live:"true" help:"longest gap between two events of a stream" allowed:"> 0"`
	KeepAliveTimeout  time.Duration `toml:"keep_alive_timeout" env:"KEEP_ALIVE_TIMEOUT" help:"idle HTTP keep-alive connections close after this" allowed:"> 0"`
	WorkerStaleAfter  time.Duration `toml:"worker_stale_after" env:"WORKER_STALE_AFTER" help:"heartbeat age after which a worker no longer counts as live" allowed:"> 0"`
	DefaultMaxTokens  int           `toml:"default_max_tokens" env:"DEFAULT_MAX_TOKENS" live:"true" help:"max_tokens of a request that sets none" allowed:"1 to 131072"`
	APIKeys           []string      `toml:"api_keys" env:"API_KEYS" envSeparator:":" help:"API key files or directories of *.json key files; a reload re-reads their contents (other paths need a restart)"`
	AllowNoAuth       bool          `toml:"allow_no_auth" env:"ALLOW_NO_AUTH" help:"serve HTTP on a non-loopback address without API keys"`
	MetricsOpen       bool          `toml:"metrics_open" env:"METRICS_OPEN" help:"serve /metrics without an API key"`
}

// Hive configures the machine agent and the workers it starts.
type Hive struct {
	ID                string        `toml:"id" env:"ID" help:"hive ID (empty: from the host name)" allowed:"1-128 letters, digits, '-', '_'"`
	CacheDir          string        `toml:"cache_dir" env:"CACHE_DIR" help:"where model files are kept (empty: the user cache directory's rbee)"`
	DataDir           string        `toml:"data_dir" env:"DATA_DIR" help:"the hive's lock and record of running workers (empty: rbee/hive/ID in the user's state directory)"`
	HeartbeatInterval time.Duration `toml:"heartbeat_interval" env:"HEARTBEAT_INTERVAL" help:"how often the hive renews its registry key" allowed:"> 0, below provision.hive_ttl / 2"`
	StopGrace         time.Duration `toml:"stop_grace" env:"STOP_GRACE" help:"on shutdown, how long workers may drain before they are killed" allowed:"> 0, at least 6/5 × worker.shutdown_grace"`
	OrphanGrace       time.Duration `toml:"orphan_grace" env:"ORPHAN_GRACE" help:"workers drain and exit once their hive has been gone this long" allowed:"-1s (never) or > 0"`
	HungTimeout       time.Duration `toml:"hung_timeout" env:"HUNG_TIMEOUT" help:"restart a live worker whose heartbeat stopped this long" allowed:"-1s (never) or > 0"`
	ProgressTimeout   time.Duration `toml:"progress_timeout" env:"PROGRESS_TIMEOUT" help:"restart a busy worker that produced no token this long" allowed:"-1s (never) or > 0"`
	LoadTimeout       time.Duration `toml:"load_timeout" env:"LOAD_TIMEOUT" help:"restart a worker not ready this long after its start (stuck loading its model)" allowed:"-1s (never) or > 0"`
	WorkerNKey        string        `toml:"worker_nkey" env:"WORKER_NKEY" help:"nkey seed file of the worker identity, which the hive's workers connect with (empty: the hive's own connection settings)"`
	WorkerCreds       string        `toml:"worker_creds" env:"WORKER_CREDS" help:"credentials file (user JWT and nkey seed) the hive's workers connect with, instead of worker_nkey"`
	WorkerLogMaxBytes int64         `toml:"worker_log_max_bytes" env:"WORKER_LOG_MAX_BYTES" help:"a worker's log file in the data directory is emptied past this size, once the hive has logged it" allowed:"> 0"`
	Replicas          int           `toml:"replicas" env:"REPLICAS" live:"true" help:"worker processes per model, where a model sets none" allowed:"1 to 64"`
	Slots             int           `toml:"slots" env:"SLOTS" live:"true" help:"jobs each worker decodes together, where a model sets none" allowed:"1 to 4096"`
	Ctx               int           `toml:"ctx" env:"CTX" live:"true" help:"context per job, where a model sets none (0: 4096 or what the model was trained for, the smaller)" allowed:"0 to 1048576"`
	KVTokens          int           `toml:"kv_tokens" env:"KV_TOKENS" live:"true" help:"KV cache per worker in tokens (0: slots × ctx)" allowed:"0 or more"`
	Threads           int           `toml:"threads" env:"THREADS" live:"true" help:"threads per worker (0: CPUs divided among the workers)" allowed:"0 or more"`
	Restart           Restart       `toml:"restart" envPrefix:"RESTART_"`
	// Models are the models the hive serves; a reload starts the added ones
	// and stops the removed ones.
	Models []Model `toml:"models" env:"-"`
}

// Model is one model a hive serves.
type Model struct {
	Name     string `toml:"name" help:"model name on the bus" allowed:"1-128 letters, digits, '-', '_', ':'"`
	Path     string `toml:"path" help:"GGUF file (empty with name stories260K: the bundled model)"`
	Replicas int    `toml:"replicas" help:"worker processes (0: hive.replicas)" allowed:"0 to 64"`
	Slots    int    `toml:"slots" help:"jobs decoded together (0: hive.slots)" allowed:"0 to 4096"`
	Ctx      int    `toml:"ctx" help:"context per job (0: hive.ctx)" allowed:"0 to 1048576"`
	KVTokens int    `toml:"kv_tokens" help:"KV cache in tokens (0: hive.kv_tokens)" allowed:"0 or more"`
	Threads  int    `toml:"threads" help:"threads (0: hive.threads)" allowed:"0 or more"`
}

// Restart is the hive's restart policy for workers that exit.
type Restart struct {
	InitialDelay    time.Duration `toml:"initial_delay" env:"INITIAL_DELAY" help:"wait before the first restart" allowed:"> 0"`
	MaxDelay        time.Duration `toml:"max_delay" env:"MAX_DELAY" help:"longest wait between restarts" allowed:">= initial_delay"`
	Jitter          float64       `toml:"jitter" env:"JITTER" help:"random extra wait, as a fraction of the delay" allowed:"0 to 1"`
	ResetAfter      time.Duration `toml:"reset_after" env:"RESET_AFTER" help:"a run longer than this resets the backoff" allowed:"> 0"`
	MaxRestarts     int           `toml:"max_restarts" env:"MAX_RESTARTS" help:"restarts within interval before the worker stays down (0: unlimited)" allowed:"0 or more"`
	Interval        time.Duration `toml:"interval" env:"INTERVAL" help:"window of max_restarts" allowed:"> 0"`
	BreakerFailures int           `toml:"breaker_failures" env:"BREAKER_FAILURES" help:"failures within breaker_window that keep a worker down (-1: no breaker)" allowed:"-1 or more than 0"`
	BreakerWindow   time.Duration `toml:"breaker_window" env:"BREAKER_WINDOW" help:"window of breaker_failures" allowed:"> 0"`
}

// Worker configures the workers (rbee worker; a hive hands these to the
// workers it starts).
type Worker struct {
	AckWait           time.Duration `toml:"ack_wait" env:"ACK_WAIT" help:"job lease: how long a job stays with a worker that stopped renewing it" allowed:">= 100ms, at least heartbeat_interval"`
	MaxAttempts       int           `toml:"max_attempts" env:"MAX_ATTEMPTS" help:"deliveries of a job that may run it before it is dead-lettered (-1: no limit)" allowed:"-1 or 1 to 100"`
	HeartbeatInterval time.Duration `toml:"heartbeat_interval" env:"HEARTBEAT_INTERVAL" live:"true" help:"how often a worker renews its registry key" allowed:"> 0, below provision.worker_ttl / 2"`
	ShutdownGrace     time.Duration `toml:"shutdown_grace" env:"SHUTDOWN_GRACE" live:"true" help:"drain: how long jobs in hand may finish after a stop signal (0: 30s; a hive's workers get 5/6 of hive.stop_grace)" allowed:"0 or more, at most 5/6 × hive.stop_grace"`
}

// Provision sizes the streams and buckets (the queen and rbee provision
// make them).
type Provision struct {
	Replicas         int           `toml:"replicas" env:"REPLICAS" help:"replicas of every stream and bucket (3 in a cluster)" allowed:"1, 3 or 5"`
	JobsMax          int64         `toml:"jobs_max" env:"JOBS_MAX" live:"true" help:"jobs the work queue holds at most" allowed:"1 or more"`
	JobsMaxPerModel  int64         `toml:"jobs_max_per_model" env:"JOBS_MAX_PER_MODEL" live:"true" help:"jobs one model's queue holds at most" allowed:"1 to jobs_max"`
	JobsMaxAge       time.Duration `toml:"jobs_max_age" env:"JOBS_MAX_AGE" live:"true" help:"how long a job may wait for a worker" allowed:"> 0"`
	StreamsMaxAge    time.Duration `toml:"streams_max_age" env:"STREAMS_MAX_AGE" live:"true" help:"how long a job's events are kept" allowed:"> 0"`
	DeadLetterMaxAge time.Duration `toml:"dlq_max_age" env:"DLQ_MAX_AGE" live:"true" help:"how long dead-lettered jobs are kept" allowed:"> 0"`
	AuditMaxAge      time.Duration `toml:"audit_max_age" env:"AUDIT_MAX_AGE" live:"true" help:"how long audit events are kept" allowed:">= 1s"`
	AuditMaxBytes    int64         `toml:"audit_max_bytes" env:"AUDIT_MAX_BYTES" live:"true" help:"bound of the audit stream in bytes; the oldest events go first (0: only the age bounds it)" allowed:"0 or more"`
	AuditReplicas    int           `toml:"audit_replicas" env:"AUDIT_REPLICAS" help:"replicas of the audit stream (0: provision.replicas)" allowed:"0, 1, 3 or 5"`
	WorkerTTL        time.Duration `toml:"worker_ttl" env:"WORKER_TTL" help:"how soon a worker that stops heartbeating leaves the registry" allowed:">= 1s, above 2 × worker.heartbeat_interval"`
	HiveTTL          time.Duration `toml:"hive_ttl" env:"HIVE_TTL" help:"how soon a hive that stops heartbeating leaves the registry" allowed:">= 1s, above 2 × hive.heartbeat_interval"`
}

// DefaultContext is the context a hive's workers get when none is set: the
// model's trained context when that is smaller.
const DefaultContext = 4096

// Default is the configuration with nothing set.
func Default() File {
	r := hive.DefaultRestartPolicy()
	return File{
		Log:  Log{Level: "info"},
		NATS: NATS{Prefix: schemas.DefaultPrefix},
		Queen: Queen{
			HTTP: queen.DefaultHTTPAddr, ShutdownGrace: queen.DefaultShutdownGrace, DefaultTimeout: queen.DefaultTimeout,
			FirstTokenTimeout: queen.DefaultFirstTokenTimeout, IdleTimeout: queen.DefaultIdleTimeout,
			KeepAliveTimeout: queen.DefaultKeepAliveTimeout, WorkerStaleAfter: queen.DefaultWorkerStaleAfter,
			DefaultMaxTokens: queen.DefaultMaxTokens,
		},
		Hive: Hive{
			HeartbeatInterval: hive.DefaultHeartbeatInterval, StopGrace: hive.DefaultStopGrace,
			OrphanGrace: hive.DefaultOrphanGrace, HungTimeout: hive.DefaultHungTimeout, ProgressTimeout: hive.DefaultProgressTimeout,
			LoadTimeout: hive.DefaultLoadTimeout, WorkerLogMaxBytes: hive.DefaultWorkerLogMax,
			Replicas: 1, Slots: 1,
			Restart: Restart{
				InitialDelay: r.InitialDelay, MaxDelay: r.MaxDelay, Jitter: r.Jitter, ResetAfter: r.ResetAfter,
				Interval: 10 * time.Minute, BreakerFailures: r.BreakerFailures, BreakerWindow: r.BreakerWindow,
			},
		},
		Worker: Worker{
			AckWait: worker.DefaultAckWait, MaxAttempts: worker.DefaultMaxAttempts,
			HeartbeatInterval: worker.DefaultHeartbeatInterval,
		},
		Provision: Provision{
			Replicas: 1, JobsMax: bus.DefaultJobsMaxMsgs, JobsMaxPerModel: bus.DefaultJobsMaxPerModel,
			JobsMaxAge: bus.DefaultJobsMaxAge, StreamsMaxAge: bus.DefaultStreamsMaxAge, DeadLetterMaxAge: bus.DefaultDeadLetterAge,
			AuditMaxAge: bus.DefaultEventsMaxAge, WorkerTTL: bus.DefaultWorkerTTL, HiveTTL: bus.DefaultHiveTTL,
		},
	}
}

// legacyEnv are variables of earlier releases and the ones that replaced
// them; the new one wins where both are set.
var legacyEnv = map[string]string{
	"RBEE_HTTP":     "RBEE_QUEEN_HTTP",
	"RBEE_API_KEYS": "RBEE_QUEEN_API_KEYS",
}

// Load reads path (none when empty) over the defaults, then the
// environment over that. It decodes strictly: an unknown key is an error
// naming it. It does not validate: call Validate once flags are applied.
func Load(path string) (File, error) {
	f := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return f, schemas.Wrap(schemas.CodeInvalidRequest, fmt.Errorf("config: %w", err))
		}
		if err := Decode(data, &f); err != nil {
			return f, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := ApplyEnv(&f, os.Environ()); err != nil {
		return f, err
	}
	return f, nil
}

// Decode decodes TOML over f, refusing keys rbee does not know.
func Decode(data []byte, f *File) error {
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(f)
	if err != nil {
		return schemas.Wrap(schemas.CodeInvalidRequest, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return schemas.Errorf(schemas.CodeInvalidRequest, "unknown keys: %s", strings.Join(keys, ", "))
	}
	return nil
}

// ApplyEnv sets the fields whose variables environ (NAME=value pairs) holds.
func ApplyEnv(f *File, environ []string) error {
	vars := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			vars[k] = v
		}
	}
	for old, repl := range legacyEnv {
		if v, ok := vars[old]; ok {
			if _, set := vars[repl]; !set {
				vars[repl] = v
			}
		}
	}
	if err := env.ParseWithOptions(f, env.Options{Environment: vars}); err != nil {
		return schemas.Wrap(schemas.CodeInvalidRequest, fmt.Errorf("environment: %w", err))
	}
	return nil
}

// Problem is one thing wrong with a configuration.
type Problem struct {
	Path    string // e.g. queen.idle_timeout, hive.models[1].name
	Value   any
	Allowed string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s = %s: want %s", p.Path, showValue(p.Value), p.Allowed)
}

func showValue(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case time.Duration:
		return v.String()
	}
	return fmt.Sprint(v)
}

// Problems is every problem Validate found; it is an error.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return fmt.Sprintf("invalid configuration (%d problems):\n  %s", len(ps), strings.Join(lines, "\n  "))
}

// Sections of the file each command uses: a process checks only the rules
// about its own sections, as the other parts may run elsewhere with
// settings of their own.
var (
	QueenSections     = []string{"log", "nats", "queen", "provision"}
	HiveSections      = []string{"log", "nats", "hive", "worker"}
	WorkerSections    = []string{"log", "nats", "worker"}
	ProvisionSections = []string{"log", "nats", "provision"}
)

// ValidateFor is Validate restricted to the problems in sections (all of
// them when none is named).
func (f File) ValidateFor(sections ...string) error {
	err := f.Validate()
	var ps Problems
	if len(sections) == 0 || !errors.As(err, &ps) {
		return err
	}
	var mine Problems
	for _, p := range ps {
		section, _, _ := strings.Cut(p.Path, ".")
		if slices.Contains(sections, section) {
			mine = append(mine, p)
		}
	}
	if mine == nil {
		return nil
	}
	return mine
}

// Validate lists every problem of f, nil when there is none.
func (f File) Validate() error {
	var ps Problems
	add := func(path string, v any, allowed string) { ps = append(ps, Problem{path, v, allowed}) }
	positive := func(path string, d time.Duration) {
		if d <= 0 {
			add(path, d, "more than 0")
		}
	}
	neverOrPositive := func(path string, d time.Duration) {
		if d == 0 || d < -time.Second || (d < 0 && d != -time.Second) {
			add(path, d, "-1s (never) or more than 0")
		}
	}
	inRange := func(path string, v, lo, hi int) {
		if v < lo || v > hi {
			add(path, v, fmt.Sprintf("%d to %d", lo, hi))
		}
	}

	if _, err := ParseLevel(f.Log.Level); err != nil {
		add("log.level", f.Log.Level, "debug, info, warn or error")
	}

	if _, err := schemas.NewSubjects(f.NATS.Prefix); err != nil {
		add("nats.prefix", f.NATS.Prefix, "tokens of letters, digits, '-' or '_' between dots")
	}
	for u := range strings.SplitSeq(f.NATS.URL, ",") {
		if u = strings.TrimSpace(u); u != "" && !hasScheme(u) {
			add("nats.url", f.NATS.URL, "nats://, tls://, ws:// or wss:// URLs, comma-separated")
			break
		}
	}
	if (f.NATS.TLSCert == "") != (f.NATS.TLSKey == "") {
		add("nats.tls_key", f.NATS.TLSKey, "set together with nats.tls_cert")
	}
	if f.NATS.Password != "" && f.NATS.User == "" {
		add("nats.user", f.NATS.User, "set with nats.password")
	}

	q := f.Queen
	if _, port, err := splitHostPort(q.HTTP); err != nil || port == "" {
		add("queen.http", q.HTTP, "host:port")
	}
	if q.ID != "" && !schemas.ValidID(q.ID) {
		add("queen.id", q.ID, "1-128 letters, digits, '-' or '_'")
	}
	positive("queen.shutdown_grace", q.ShutdownGrace)
	positive("queen.default_timeout", q.DefaultTimeout)
	positive("queen.first_token_timeout", q.FirstTokenTimeout)
	positive("queen.idle_timeout", q.IdleTimeout)
	positive("queen.keep_alive_timeout", q.KeepAliveTimeout)
	positive("queen.worker_stale_after", q.WorkerStaleAfter)
	inRange("queen.default_max_tokens", q.DefaultMaxTokens, 1, schemas.MaxTokensLimit)
	for i, k := range q.APIKeys {
		if k == "" {
			add(fmt.Sprintf("queen.api_keys[%d]", i), k, "a key file or directory")
		}
	}
	if q.FirstTokenTimeout > q.DefaultTimeout && q.DefaultTimeout > 0 {
		add("queen.first_token_timeout", q.FirstTokenTimeout, fmt.Sprintf("at most queen.default_timeout (%v)", q.DefaultTimeout))
	}

	h := f.Hive
	if h.ID != "" && !schemas.ValidID(h.ID) {
		add("hive.id", h.ID, "1-128 letters, digits, '-' or '_'")
	}
	positive("hive.heartbeat_interval", h.HeartbeatInterval)
	positive("hive.stop_grace", h.StopGrace)
	neverOrPositive("hive.orphan_grace", h.OrphanGrace)
	neverOrPositive("hive.hung_timeout", h.HungTimeout)
	neverOrPositive("hive.progress_timeout", h.ProgressTimeout)
	neverOrPositive("hive.load_timeout", h.LoadTimeout)
	if h.WorkerLogMaxBytes <= 0 {
		add("hive.worker_log_max_bytes", h.WorkerLogMaxBytes, "more than 0")
	}
	inRange("hive.replicas", h.Replicas, 1, 64)
	inRange("hive.slots", h.Slots, 1, 4096)
	inRange("hive.ctx", h.Ctx, 0, 1<<20)
	if h.KVTokens < 0 {
		add("hive.kv_tokens", h.KVTokens, "0 (slots × ctx) or more")
	}
	if h.Threads < 0 {
		add("hive.threads", h.Threads, "0 (CPUs divided among the workers) or more")
	}
	// The hive tells its workers to drain within five sixths of its grace;
	// a worker configured to drain longer would be killed mid-drain.
	if h.StopGrace > 0 && f.Worker.ShutdownGrace > 0 && f.Worker.ShutdownGrace > h.StopGrace*5/6 {
		add("hive.stop_grace", h.StopGrace, fmt.Sprintf("at least 6/5 × worker.shutdown_grace (%v), so workers drain before they are killed", f.Worker.ShutdownGrace))
	}
	if h.HeartbeatInterval > 0 && f.Provision.HiveTTL > 0 && 2*h.HeartbeatInterval >= f.Provision.HiveTTL {
		add("hive.heartbeat_interval", h.HeartbeatInterval, fmt.Sprintf("below half of provision.hive_ttl (%v)", f.Provision.HiveTTL))
	}
	if h.WorkerNKey != "" && h.WorkerCreds != "" {
		add("hive.worker_creds", h.WorkerCreds, "empty when hive.worker_nkey is set: the workers take one identity")
	}
	r := h.Restart
	positive("hive.restart.initial_delay", r.InitialDelay)
	positive("hive.restart.reset_after", r.ResetAfter)
	positive("hive.restart.interval", r.Interval)
	positive("hive.restart.breaker_window", r.BreakerWindow)
	if r.MaxDelay < r.InitialDelay {
		add("hive.restart.max_delay", r.MaxDelay, fmt.Sprintf("at least hive.restart.initial_delay (%v)", r.InitialDelay))
	}
	if r.Jitter < 0 || r.Jitter > 1 || r.Jitter != r.Jitter {
		add("hive.restart.jitter", r.Jitter, "0 to 1")
	}
	if r.MaxRestarts < 0 {
		add("hive.restart.max_restarts", r.MaxRestarts, "0 (unlimited) or more")
	}
	if r.BreakerFailures < -1 || r.BreakerFailures == 0 {
		add("hive.restart.breaker_failures", r.BreakerFailures, "-1 (no breaker) or more than 0")
	}
	seen := map[string]int{}
	for i, m := range h.Models {
		p := fmt.Sprintf("hive.models[%d]", i)
		if !schemas.ValidModel(m.Name) {
			add(p+".name", m.Name, "1-128 letters, digits, '-', '_' or ':'")
		} else if j, dup := seen[m.Name]; dup {
			add(p+".name", m.Name, fmt.Sprintf("a name not already used by hive.models[%d]", j))
		} else {
			seen[m.Name] = i
		}
		if m.Path == "" && m.Name != BundledName {
			add(p+".path", m.Path, "a GGUF file (only "+BundledName+" may leave it empty)")
		}
		inRange(p+".replicas", m.Replicas, 0, 64)
		inRange(p+".slots", m.Slots, 0, 4096)
		inRange(p+".ctx", m.Ctx, 0, 1<<20)
		if m.KVTokens < 0 {
			add(p+".kv_tokens", m.KVTokens, "0 or more")
		}
		if m.Threads < 0 {
			add(p+".threads", m.Threads, "0 or more")
		}
	}

	w := f.Worker
	if w.AckWait < 100*time.Millisecond {
		add("worker.ack_wait", w.AckWait, "at least 100ms")
	} else if w.AckWait < w.HeartbeatInterval {
		add("worker.ack_wait", w.AckWait, fmt.Sprintf("at least worker.heartbeat_interval (%v), so a lease outlives a missed beat", w.HeartbeatInterval))
	}
	if w.MaxAttempts != -1 && (w.MaxAttempts < 1 || w.MaxAttempts > 100) {
		add("worker.max_attempts", w.MaxAttempts, "-1 (no limit) or 1 to 100")
	}
	positive("worker.heartbeat_interval", w.HeartbeatInterval)
	if w.ShutdownGrace < 0 {
		add("worker.shutdown_grace", w.ShutdownGrace, "0 (derived) or more")
	}
	if w.HeartbeatInterval > 0 && f.Provision.WorkerTTL > 0 && 2*w.HeartbeatInterval >= f.Provision.WorkerTTL {
		add("worker.heartbeat_interval", w.HeartbeatInterval, fmt.Sprintf("below half of provision.worker_ttl (%v)", f.Provision.WorkerTTL))
	}

	p := f.Provision
	if p.Replicas != 1 && p.Replicas != 3 && p.Replicas != 5 {
		add("provision.replicas", p.Replicas, "1, 3 or 5")
	}
	if p.JobsMax < 1 {
		add("provision.jobs_max", p.JobsMax, "1 or more")
	}
	if p.JobsMaxPerModel < 1 || (p.JobsMax >= 1 && p.JobsMaxPerModel > p.JobsMax) {
		add("provision.jobs_max_per_model", p.JobsMaxPerModel, fmt.Sprintf("1 to provision.jobs_max (%d)", p.JobsMax))
	}
	positive("provision.jobs_max_age", p.JobsMaxAge)
	positive("provision.streams_max_age", p.StreamsMaxAge)
	positive("provision.dlq_max_age", p.DeadLetterMaxAge)
	if p.AuditMaxAge < time.Second {
		add("provision.audit_max_age", p.AuditMaxAge, "at least 1s")
	}
	if p.AuditMaxBytes < 0 {
		add("provision.audit_max_bytes", p.AuditMaxBytes, "0 (no bound) or more")
	}
	if p.AuditReplicas != 0 && p.AuditReplicas != 1 && p.AuditReplicas != 3 && p.AuditReplicas != 5 {
		add("provision.audit_replicas", p.AuditReplicas, "0 (provision.replicas), 1, 3 or 5")
	}
	if p.WorkerTTL < time.Second {
		add("provision.worker_ttl", p.WorkerTTL, "at least 1s")
	}
	if p.HiveTTL < time.Second {
		add("provision.hive_ttl", p.HiveTTL, "at least 1s")
	}
	if ps == nil {
		return nil
	}
	return ps
}

func hasScheme(u string) bool {
	for _, s := range []string{"nats://", "tls://", "ws://", "wss://"} {
		if strings.HasPrefix(u, s) {
			return true
		}
	}
	return false
}

func splitHostPort(addr string) (string, string, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", errors.New("no port")
	}
	return addr[:i], addr[i+1:], nil
}

// BundledName is the model rbee ships with (hive/bundled.Name).
const BundledName = "stories260K"

// Bus is the NATS connection config, named name in server monitoring.
func (f File) Bus(name string) bus.Config {
	n := f.NATS
	return bus.Config{
		URL: n.URL, Creds: n.Creds, NKey: n.NKey, User: n.User, Password: n.Password, Token: n.Token,
		TLSCert: n.TLSCert, TLSKey: n.TLSKey, TLSCA: n.TLSCA, InboxPrefix: n.InboxPrefix, Name: name,
	}
}

// Provisioning sizes the streams and buckets.
func (f File) Provisioning() bus.Provisioning {
	p := f.Provision
	return bus.Provisioning{
		Replicas: p.Replicas, JobsMaxMsgs: p.JobsMax, JobsMaxPerModel: p.JobsMaxPerModel, JobsMaxAge: p.JobsMaxAge,
		StreamsMaxAge: p.StreamsMaxAge, DeadLetterMaxAge: p.DeadLetterMaxAge, WorkerTTL: p.WorkerTTL, HiveTTL: p.HiveTTL,
		EventsMaxAge: p.AuditMaxAge, EventsMaxBytes: p.AuditMaxBytes, EventsReplicas: p.AuditReplicas,
	}
}

// QueenConfig is the queen's config without its subjects and keys, which
// the caller sets.
func (f File) QueenConfig() queen.Config {
	q := f.Queen
	return queen.Config{
		HTTPAddr: q.HTTP, ID: q.ID, ShutdownGrace: q.ShutdownGrace, DefaultTimeout: q.DefaultTimeout,
		FirstTokenTimeout: q.FirstTokenTimeout, IdleTimeout: q.IdleTimeout, KeepAliveTimeout: q.KeepAliveTimeout,
		WorkerStaleAfter: q.WorkerStaleAfter, DefaultMaxTokens: q.DefaultMaxTokens, Provisioning: f.Provisioning(),
		AllowNoAuth: q.AllowNoAuth, MetricsOpen: q.MetricsOpen,
	}
}

// RestartPolicy is the hive's restart policy.
func (f File) RestartPolicy() hive.RestartPolicy {
	r := f.Hive.Restart
	return hive.RestartPolicy{
		InitialDelay: r.InitialDelay, MaxDelay: r.MaxDelay, Jitter: r.Jitter, ResetAfter: r.ResetAfter,
		MaxRestarts: r.MaxRestarts, Interval: r.Interval, BreakerFailures: r.BreakerFailures, BreakerWindow: r.BreakerWindow,
	}
}

// ModelSpecs are the hive's models with the hive-wide settings filled in
// where a model sets none. bundled resolves the bundled model's path (it
// installs it); it is called only when a model needs it, and with no
// models configured the hive serves the bundled one.
func (f File) ModelSpecs(bundled func() (string, error)) ([]hive.ModelSpec, error) {
	h := f.Hive
	models := h.Models
	if len(models) == 0 {
		models = []Model{{Name: BundledName}}
	}
	total := 0
	for _, m := range models {
		total += cmp(m.Replicas, h.Replicas)
	}
	specs := make([]hive.ModelSpec, len(models))
	for i, m := range models {
		path := m.Path
		if path == "" {
			var err error
			if path, err = bundled(); err != nil {
				return nil, err
			}
		}
		threads := cmp(m.Threads, h.Threads)
		if threads == 0 {
			threads = max(1, runtime.NumCPU()/max(total, 1))
		}
		specs[i] = hive.ModelSpec{
			Name: m.Name, Path: path, Replicas: cmp(m.Replicas, h.Replicas), Slots: cmp(m.Slots, h.Slots),
			ContextLength: cmp(m.Ctx, h.Ctx), KVTokens: cmp(m.KVTokens, h.KVTokens), Threads: threads,
		}
	}
	return specs, nil
}

// cmp is v, or def where v is unset.
func cmp(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// WorkerEnv are the variables a hive hands its workers, so that they run
// with this file's [worker] and [log] sections whatever their own
// environment says.
func (f File) WorkerEnv() []string {
	w := f.Worker
	return []string{
		"RBEE_LOG_LEVEL=" + f.Log.Level,
		"RBEE_WORKER_ACK_WAIT=" + w.AckWait.String(),
		fmt.Sprintf("RBEE_WORKER_MAX_ATTEMPTS=%d", w.MaxAttempts),
		"RBEE_WORKER_HEARTBEAT_INTERVAL=" + w.HeartbeatInterval.String(),
		"RBEE_WORKER_SHUTDOWN_GRACE=" + w.ShutdownGrace.String(),
	}
}

// DefaultCacheDir is where model files are kept when hive.cache_dir is empty.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "rbee")
	}
	return filepath.Join(os.TempDir(), "rbee")
}
