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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/schemas"
)

var runConfig = subcommands("config", map[string]command{
	"validate": {"check a configuration file (with the environment over it): every problem, then a non-zero exit", runConfigValidate},
	"print":    {"print the effective configuration (a file, the environment over it) as TOML, secrets masked", runConfigPrint},
})

func runConfigValidate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("config validate", stderr)
	path, err := parseWithName(fs, args)
	if err != nil {
		return err
	}
	f, err := config.Load(path)
	if err != nil {
		return usageError{err}
	}
	if err := f.Validate(); err != nil {
		return usageError{fmt.Errorf("%s: %w", path, err)}
	}
	_, err = fmt.Fprintf(stdout, "%s: valid\n", path)
	return err
}

func runConfigPrint(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("config print", stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 1 {
		return usageError{errors.New("config print: at most one FILE")}
	}
	path := fs.Arg(0)
	if path == "" {
		path = os.Getenv("RBEE_CONFIG")
	}
	f, err := config.Load(path)
	if err != nil {
		return usageError{err}
	}
	out, err := f.TOML()
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, out)
	return err
}

// configLoader loads a component command's configuration: defaults, the
// file that --config (or RBEE_CONFIG) names, the environment over it and
// the command's flags over that. A reload runs the same again, with the
// same command line, so flags keep winning.
type configLoader struct {
	name string
	args []string
	// bind adds the command's flags, bound to the fields of f they set,
	// and any flags of its own.
	bind func(fs *flag.FlagSet, f *config.File)
	// sections are those whose rules the command checks (all when nil).
	sections []string
}

// configPath is the --config of args, else RBEE_CONFIG.
func configPath(args []string) string {
	for i, a := range args {
		if a == "--" || !strings.HasPrefix(a, "-") {
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "config" {
			continue
		}
		if hasVal {
			return val
		}
		if i+1 < len(args) {
			return args[i+1]
		}
	}
	return os.Getenv("RBEE_CONFIG")
}

// errValidated ends a command run with --validate-config whose
// configuration is valid.
var errValidated = errors.New("configuration valid")

// load returns the valid configuration, a usageError listing every
// problem, or errValidated after --validate-config printed that it is
// valid.
func (l *configLoader) load(stdout, stderr io.Writer) (config.File, error) {
	f, err := config.Load(configPath(l.args))
	if err != nil {
		return f, usageError{err}
	}
	fs := newFlags(l.name, stderr)
	fs.String("config", "", "configuration file, TOML (see docs/CONFIG.md; env RBEE_CONFIG); SIGHUP reloads it")
	validate := fs.Bool("validate-config", false, "check the configuration, print every problem, and exit without starting")
	l.bind(fs, &f)
	if err := parse(fs, l.args); err != nil {
		return f, err
	}
	if err := f.ValidateFor(l.sections...); err != nil {
		return f, usageError{err}
	}
	if *validate {
		fmt.Fprintln(stdout, "configuration valid")
		return f, errValidated
	}
	return f, nil
}

// applier applies a new configuration to one component; old is the one in
// force.
type applier func(ctx context.Context, old, next config.File) error

// reloader reloads the configuration on SIGHUP: it loads and validates the
// whole new configuration first, then applies it to each component, and
// keeps the old one on any error. It sets the log level, logs and audits
// the change as a field diff, and keeps the reload metrics.
type reloader struct {
	loader *configLoader
	level  *slog.LevelVar
	log    *slog.Logger
	audit  func(schemas.AuditEvent) // nil: not audited
	apply  []applier

	mu  sync.Mutex
	cur config.File

	ok, at prometheus.Gauge
}

func newReloader(l *configLoader, cur config.File, level *slog.LevelVar, log *slog.Logger, reg prometheus.Registerer) (*reloader, error) {
	r := &reloader{
		loader: l, cur: cur, level: level, log: log,
		ok: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rbee_config_last_reload_successful", Help: "Whether the last configuration reload succeeded (1) or was refused (0).",
		}),
		at: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "rbee_config_last_reload_success_timestamp_seconds", Help: "When the configuration was last loaded successfully, in Unix seconds.",
		}),
	}
	for _, c := range []prometheus.Collector{r.ok, r.at} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("config metrics: %w", err)
		}
	}
	r.ok.Set(1)
	r.at.Set(float64(time.Now().Unix()))
	return r, nil
}

// Reload loads the configuration again and applies it.
func (r *reloader) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next, err := r.loader.load(io.Discard, io.Discard)
	if err == nil {
		for _, apply := range r.apply {
			if err = apply(ctx, r.cur, next); err != nil {
				break
			}
		}
	}
	if err != nil {
		r.ok.Set(0)
		r.log.Error("configuration not reloaded; the one loaded before stays in force", "err", err)
		r.record(schemas.AuditEvent{Type: schemas.AuditConfigReloaded, Code: schemas.CodeInvalidRequest, Reason: err.Error()})
		return err
	}
	changes := config.Diff(r.cur, next)
	lines := make([]string, len(changes))
	var restart []string
	for i, c := range changes {
		lines[i] = c.String()
		if !config.Live(c.Path) {
			restart = append(restart, c.Path)
		}
	}
	if lv, err := config.ParseLevel(next.Log.Level); err == nil {
		r.level.Set(lv)
	}
	r.cur = next
	r.ok.Set(1)
	r.at.Set(float64(time.Now().Unix()))
	r.log.Info("configuration reloaded", "changes", lines)
	if len(restart) > 0 {
		r.log.Warn("changed settings that apply only after a restart", "fields", restart)
	}
	r.record(schemas.AuditEvent{Type: schemas.AuditConfigReloaded, Reason: fmt.Sprintf("%d changes: %s", len(lines), strings.Join(lines, "; "))})
	return nil
}

func (r *reloader) record(ev schemas.AuditEvent) {
	if r.audit != nil {
		r.audit(ev)
	}
}

// Run reloads on every SIGHUP until ctx ends. SIGHUP no longer ends the
// process.
func (r *reloader) Run(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			_ = r.Reload(ctx) // logged, audited and in the metrics
		}
	}
}

// actor is one part of a process: it runs until ctx ends or it fails.
type actor struct {
	name string
	run  func(ctx context.Context) error
}

// runGroup runs the actors until the first returns, then stops the others
// (their context ends) and waits for them. It returns the first error that
// is not the stop itself.
func runGroup(ctx context.Context, actors ...actor) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(actors))
	for _, a := range actors {
		go func() {
			err := a.run(ctx)
			if err != nil && !errors.Is(err, context.Canceled) {
				err = fmt.Errorf("%s: %w", a.name, err)
			} else {
				err = nil
			}
			errs <- err
		}()
	}
	err := <-errs
	cancel()
	for range len(actors) - 1 {
		if e := <-errs; err == nil {
			err = e
		}
	}
	return err
}
