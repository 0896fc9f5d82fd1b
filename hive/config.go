package hive

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/schemas"
)

// Defaults applied by New.
const (
	DefaultHeartbeatInterval = 5 * time.Second
	// DefaultStopGrace is the graceful shutdown timeout. Workers are told
	// to drain within five sixths of it, so that they hand back the jobs
	// they could not finish before the kill.
	DefaultStopGrace       = 30 * time.Second
	DefaultOrphanGrace     = time.Minute
	DefaultHungTimeout     = 15 * time.Second
	DefaultProgressTimeout = 2 * time.Minute
	DefaultLoadTimeout     = 10 * time.Minute
)

// ModelSpec is one model the hive serves, with how many worker processes run it.
type ModelSpec struct {
	Name          string // schemas.ValidModel
	Path          string // GGUF file path
	Replicas      int    // worker processes for this model (default 1)
	Slots         int    // jobs each worker decodes together (default 1)
	ContextLength int    // 0 = model default
	KVTokens      int    // KV pool per worker in positions; 0 = Slots × ContextLength
	Threads       int    // 0 = let the worker decide
}

// Config configures a hive.
type Config struct {
	ID                string // hive ID (schemas.ValidID), default derived from the hostname
	Models            []ModelSpec
	Executable        string   // the rbee binary run as "<exe> worker ...", default os.Executable()
	ServerURL         string   // NATS URL handed to workers (--server), required
	Prefix            string   // subject prefix handed to workers (--prefix), default Subjects.Prefix
	ExtraEnv          []string // extra environment for workers (e.g. NATS_CREDS=...)
	Subjects          schemas.Subjects
	HeartbeatInterval time.Duration // default DefaultHeartbeatInterval
	StopGrace         time.Duration // SIGTERM to SIGKILL, default DefaultStopGrace
	// DataDir holds the hive's lock, its record of running workers, from
	// which a hive restarted after a crash adopts them, and the workers' log
	// files (workers/<id>.log), which the hive re-emits through its logger.
	// Empty: no lock, no record, no adoption, and workers write to the
	// hive's stderr.
	DataDir string
	// WorkerLogMax is the size in bytes past which a worker's log file is
	// emptied, once the hive has read it. Default DefaultWorkerLogMax.
	WorkerLogMax int64
	// OrphanGrace is handed to the workers: one whose hive is gone this long
	// drains and exits. Default DefaultOrphanGrace; negative: never.
	OrphanGrace time.Duration
	// HungTimeout: a live worker whose heartbeat has not changed this long
	// is killed and restarted. Default DefaultHungTimeout; negative: never.
	HungTimeout time.Duration
	// ProgressTimeout: a busy worker that has produced no token this long is
	// killed and restarted. Default DefaultProgressTimeout; negative: never.
	ProgressTimeout time.Duration
	// LoadTimeout: a worker not ready this long after its start (loading
	// its model, or stuck at it) is killed, and its run counts as a failed
	// start. Default DefaultLoadTimeout; negative: never.
	LoadTimeout time.Duration
	Restart     RestartPolicy // zero value: DefaultRestartPolicy()
	// Catalog are models the hive can start on request (spawn, on-demand
	// load) but does not start by itself.
	Catalog           []ModelSpec
	Preflight         Preflight
	ReconcileInterval time.Duration // default DefaultReconcileInterval
	IdleTimeout       time.Duration // a worker without a job this long is stopped; 0: never
	// WorkerMetrics starts each worker with a metrics listener on a
	// loopback port of its own choosing, which it tells in its heartbeat
	// and WorkerMetrics scrapes: the hive's /metrics then holds its
	// workers' metrics too, and no worker needs a reachable port.
	WorkerMetrics bool
	// ConfigFile is handed to the workers (--config), so that they read the
	// hive's configuration file and a reload (ReloadWorkers) reaches them.
	// Empty: they get none.
	ConfigFile string
}

// RestartPolicy says when a worker that exited is started again. Every exit
// the hive did not ask for counts, a clean one included: the hive's
// configuration says the worker should be running.
//
// The delay before restart n (counting from 0 since the last reset) is
// InitialDelay·2ⁿ capped at MaxDelay, plus a random extra of up to Jitter
// times that. A worker that needs more than MaxRestarts restarts within
// Interval stays down (StateFailed) while the other workers keep running.
//
// A zero policy means DefaultRestartPolicy(); in a non-zero one, zero
// durations take their defaults and Jitter is used as given.
type RestartPolicy struct {
	InitialDelay time.Duration
	MaxDelay     time.Duration
	Jitter       float64       // 0 to 1
	ResetAfter   time.Duration // a run longer than this resets the backoff
	MaxRestarts  int           // within Interval; 0 = unlimited
	Interval     time.Duration // default 10 minutes when MaxRestarts is set
	// BreakerFailures exits or failed starts within BreakerWindow open the
	// circuit breaker: the worker stays down (StateFailed). Default 5 in 5
	// minutes; -1: no breaker.
	BreakerFailures int
	BreakerWindow   time.Duration
}

// DefaultRestartPolicy restarts without limit, waiting 1 s after the first
// crash and up to a minute after repeated ones.
func DefaultRestartPolicy() RestartPolicy {
	return RestartPolicy{
		InitialDelay:    time.Second,
		MaxDelay:        time.Minute,
		Jitter:          0.2,
		ResetAfter:      2 * time.Minute,
		BreakerFailures: 5,
		BreakerWindow:   5 * time.Minute,
	}
}

const defaultRestartInterval = 10 * time.Minute

func (p RestartPolicy) withDefaults() (RestartPolicy, error) {
	if p == (RestartPolicy{}) {
		return DefaultRestartPolicy(), nil
	}
	d := DefaultRestartPolicy()
	switch {
	case p.InitialDelay < 0, p.MaxDelay < 0, p.ResetAfter < 0, p.Interval < 0:
		return p, errors.New("restart policy: durations must not be negative")
	case p.Jitter < 0 || p.Jitter > 1 || p.Jitter != p.Jitter:
		return p, fmt.Errorf("restart policy: jitter %v: want 0 to 1", p.Jitter)
	case p.MaxRestarts < 0:
		return p, fmt.Errorf("restart policy: max restarts %d: want 0 (unlimited) or more", p.MaxRestarts)
	case p.BreakerFailures < -1, p.BreakerWindow < 0:
		return p, fmt.Errorf("restart policy: breaker %d failures in %v: want -1 (none), 0 (default) or more", p.BreakerFailures, p.BreakerWindow)
	}
	switch p.BreakerFailures {
	case -1:
		p.BreakerFailures = 0
	case 0:
		p.BreakerFailures = d.BreakerFailures
	}
	if p.BreakerWindow == 0 {
		p.BreakerWindow = d.BreakerWindow
	}
	if p.InitialDelay == 0 {
		p.InitialDelay = d.InitialDelay
	}
	if p.MaxDelay == 0 {
		p.MaxDelay = max(d.MaxDelay, p.InitialDelay)
	}
	if p.MaxDelay < p.InitialDelay {
		return p, fmt.Errorf("restart policy: max delay %v is below initial delay %v", p.MaxDelay, p.InitialDelay)
	}
	if p.ResetAfter == 0 {
		p.ResetAfter = d.ResetAfter
	}
	if p.MaxRestarts > 0 && p.Interval == 0 {
		p.Interval = defaultRestartInterval
	}
	return p, nil
}

// withDefaults fills in defaults and validates the whole config, so that a
// bad one fails before any worker starts.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.ID == "" {
		host, err := os.Hostname()
		if err != nil {
			return cfg, fmt.Errorf("hive id from hostname: %w", err)
		}
		cfg.ID = sanitizeID(host)
	}
	if !schemas.ValidID(cfg.ID) {
		return cfg, fmt.Errorf("hive id %q: want 1-128 letters, digits, '-' or '_'", cfg.ID)
	}
	if cfg.ServerURL == "" {
		return cfg, errors.New("server URL for workers is required")
	}
	if cfg.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return cfg, fmt.Errorf("worker executable: %w", err)
		}
		cfg.Executable = exe
	}
	if err := cfg.setPrefix(); err != nil {
		return cfg, err
	}
	for _, kv := range cfg.ExtraEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return cfg, fmt.Errorf("extra env %q: want NAME=value", kv)
		}
	}
	switch {
	case cfg.HeartbeatInterval < 0:
		return cfg, fmt.Errorf("heartbeat interval %v is negative", cfg.HeartbeatInterval)
	case cfg.HeartbeatInterval == 0:
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	switch {
	case cfg.StopGrace < 0:
		return cfg, fmt.Errorf("stop grace %v is negative", cfg.StopGrace)
	case cfg.StopGrace == 0:
		cfg.StopGrace = DefaultStopGrace
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.OrphanGrace, DefaultOrphanGrace}, {&cfg.HungTimeout, DefaultHungTimeout}, {&cfg.ProgressTimeout, DefaultProgressTimeout}, {&cfg.LoadTimeout, DefaultLoadTimeout}} {
		switch {
		case *d.v == 0:
			*d.v = d.def
		case *d.v < 0:
			*d.v = 0 // never
		}
	}
	switch {
	case cfg.WorkerLogMax < 0:
		return cfg, fmt.Errorf("worker log max %d bytes is negative", cfg.WorkerLogMax)
	case cfg.WorkerLogMax == 0:
		cfg.WorkerLogMax = DefaultWorkerLogMax
	}
	var err error
	if cfg.ConfigFile != "" {
		// The workers may not share the hive's working directory.
		if cfg.ConfigFile, err = filepath.Abs(cfg.ConfigFile); err != nil {
			return cfg, fmt.Errorf("config file: %w", err)
		}
	}
	if cfg.Restart, err = cfg.Restart.withDefaults(); err != nil {
		return cfg, err
	}
	if len(cfg.Models) == 0 && len(cfg.Catalog) == 0 {
		return cfg, errors.New("no models configured")
	}
	if cfg.Preflight, err = cfg.Preflight.withDefaults(); err != nil {
		return cfg, err
	}
	switch {
	case cfg.ReconcileInterval < 0, cfg.IdleTimeout < 0:
		return cfg, errors.New("reconcile interval and idle timeout must not be negative")
	case cfg.ReconcileInterval == 0:
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	models := make([]ModelSpec, len(cfg.Models))
	seen := map[string]bool{}
	for i, m := range cfg.Models {
		if m, err = m.withDefaults(); err != nil {
			return cfg, fmt.Errorf("models[%d]: %w", i, err)
		}
		if seen[m.Name] {
			return cfg, fmt.Errorf("models[%d]: model %q is listed twice", i, m.Name)
		}
		seen[m.Name] = true
		models[i] = m
	}
	cfg.Models = models
	catalog := make([]ModelSpec, len(cfg.Catalog))
	for i, m := range cfg.Catalog {
		if catalog[i], err = m.withDefaults(); err != nil {
			return cfg, fmt.Errorf("catalog[%d]: %w", i, err)
		}
	}
	cfg.Catalog = catalog
	return cfg, nil
}

// setPrefix reconciles Prefix and Subjects, which name the same thing: the
// hive's own subjects and its workers' must agree.
func (cfg *Config) setPrefix() error {
	switch {
	case cfg.Prefix == "" && cfg.Subjects.Prefix == "":
		cfg.Prefix = schemas.DefaultPrefix
	case cfg.Prefix == "":
		cfg.Prefix = cfg.Subjects.Prefix
	case cfg.Subjects.Prefix != "" && cfg.Subjects.Prefix != cfg.Prefix:
		return fmt.Errorf("prefix %q differs from the subjects' prefix %q", cfg.Prefix, cfg.Subjects.Prefix)
	}
	subj, err := schemas.NewSubjects(cfg.Prefix)
	if err != nil {
		return err
	}
	cfg.Subjects = subj
	return nil
}

func (m ModelSpec) withDefaults() (ModelSpec, error) {
	if !schemas.ValidModel(m.Name) {
		return m, fmt.Errorf("model name %q: want 1-128 letters, digits, '-', '_' or ':'", m.Name)
	}
	if m.Path == "" {
		return m, fmt.Errorf("model %s: path is required", m.Name)
	}
	fi, err := os.Stat(m.Path)
	if err != nil {
		return m, fmt.Errorf("model %s: %w", m.Name, err)
	}
	if !fi.Mode().IsRegular() {
		return m, fmt.Errorf("model %s: %s is not a regular file", m.Name, m.Path)
	}
	for _, f := range []struct {
		name string
		v    *int
		def  int
	}{
		{"replicas", &m.Replicas, 1},
		{"slots", &m.Slots, 1},
		{"context length", &m.ContextLength, 0},
		{"KV tokens", &m.KVTokens, 0},
		{"threads", &m.Threads, 0},
	} {
		if *f.v < 0 {
			return m, fmt.Errorf("model %s: %s %d is negative", m.Name, f.name, *f.v)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	return m, nil
}

// workerID names replica r of model on hive: "<hive>-<model>-<r>", with
// characters an ID cannot hold replaced. A name too long for an ID is cut and
// ends in a hash of the full name, so that cut names stay distinct.
func workerID(hive, model string, replica int) string {
	full := hive + "-" + model + "-" + strconv.Itoa(replica)
	id := idChars(full)
	if len(id) <= maxIDLen {
		return id
	}
	sum := sha256.Sum256([]byte(full))
	tail := "-" + hex.EncodeToString(sum[:6])
	return id[:maxIDLen-len(tail)] + tail
}

// maxIDLen is the longest ID schemas.ValidID accepts.
const maxIDLen = 128

// sanitizeID maps s onto an ID schemas.ValidID accepts.
func sanitizeID(s string) string {
	id := idChars(s)
	if len(id) > maxIDLen {
		id = id[:maxIDLen]
	}
	return id
}

// idChars replaces the characters of s that an ID cannot hold, and makes
// it start with a letter or digit.
func idChars(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "hive"
	}
	if b[0] == '_' {
		b = append([]byte("h"), b...)
	}
	return string(b)
}

// workerArgs is the worker command line after the executable; the CLI's
// worker command parses exactly these flags.
func workerArgs(cfg Config, m ModelSpec, id string) []string {
	args := []string{
		"worker",
		"--server", cfg.ServerURL,
		"--prefix", cfg.Prefix,
		"--model-name", m.Name,
		"--model", m.Path,
		"--worker-id", id,
		"--hive-id", cfg.ID,
		"--slots", strconv.Itoa(m.Slots),
		"--orphan-grace", cfg.OrphanGrace.String(),
		"--shutdown-grace", (cfg.StopGrace - cfg.StopGrace/6).String(),
	}
	if cfg.WorkerMetrics {
		args = append(args, "--metrics-addr", workerMetricsAddr)
	}
	if cfg.ConfigFile != "" {
		args = append(args, "--config", cfg.ConfigFile)
	}
	if m.ContextLength > 0 {
		args = append(args, "--ctx", strconv.Itoa(m.ContextLength))
	}
	if m.KVTokens > 0 {
		args = append(args, "--kv-tokens", strconv.Itoa(m.KVTokens))
	}
	if m.Threads > 0 {
		args = append(args, "--threads", strconv.Itoa(m.Threads))
	}
	return args
}
