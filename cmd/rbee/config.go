package main

import (
	"context"
	"encoding/json"
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

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/schemas"
)

var runConfig = subcommands("config", map[string]command{
	"validate": {"check a configuration file (with the environment over it): every problem, then a non-zero exit", runConfigValidate},
	"print":    {"print the effective configuration (a file, the environment over it) as TOML, secrets masked", runConfigPrint},
	"reload":   {"have the running queens and hives, and the hives their workers (or one, --queen ID, --hive ID, --worker ID), reload their configuration, as SIGHUP does", runConfigReload},
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

// errValidated ends a command run with --validate-config or
// --print-config whose configuration is valid: it was asked to say so, not
// to start.
var errValidated = errors.New("configuration valid")

// load returns the valid configuration, a usageError listing every
// problem, or errValidated after --validate-config said it is valid or
// --print-config printed it.
func (l *configLoader) load(stdout, stderr io.Writer) (config.File, error) {
	f, err := config.Load(configPath(l.args))
	if err != nil {
		return f, usageError{err}
	}
	fs := newFlags(l.name, stderr)
	fs.String("config", "", "configuration file, TOML (see docs/CONFIG.md; env RBEE_CONFIG); SIGHUP reloads it")
	validate := fs.Bool("validate-config", false, "check the configuration, print every problem, and exit without starting")
	print := fs.Bool("print-config", false, "print the effective configuration (file, environment and flags; secrets masked) and exit without starting")
	l.bind(fs, &f)
	if err := parse(fs, l.args); err != nil {
		return f, err
	}
	if err := f.ValidateFor(l.sections...); err != nil {
		return f, usageError{err}
	}
	switch {
	case *print:
		text, err := f.TOML()
		if err != nil {
			return f, err
		}
		fmt.Fprint(stdout, text)
		return f, errValidated
	case *validate:
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
	// reloaded run after each reload that was applied (a hive asks its
	// workers to follow).
	reloaded []func()
	// hup delivers SIGHUP, when the command caught it before Run; nil: Run
	// does.
	hup chan os.Signal

	// listen are the control subjects on which `rbee config reload` asks
	// for a reload, subscribed on nc while Run runs.
	nc     *nats.Conn
	listen []string
	kind   string // queen, hive or worker, in replies
	id     string

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

// Reload loads the configuration again and applies it, and returns the
// changes.
func (r *reloader) Reload(ctx context.Context) ([]config.Change, error) {
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
		return nil, err
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
	for _, f := range r.reloaded {
		f()
	}
	return changes, nil
}

func (r *reloader) record(ev schemas.AuditEvent) {
	if r.audit != nil {
		r.audit(ev)
	}
}

// reloadReply answers a reload asked over the bus.
type reloadReply struct {
	Kind    string   `json:"kind"`
	ID      string   `json:"id"`
	Changes []string `json:"changes,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Run reloads on every SIGHUP, and on every request on its control
// subjects, until ctx ends. SIGHUP no longer ends the process.
func (r *reloader) Run(ctx context.Context) error {
	hup := r.hup
	if hup == nil {
		hup = make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
	}
	asked := make(chan *nats.Msg, 8)
	for _, subj := range r.listen {
		sub, err := r.nc.ChanSubscribe(subj, asked)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subj, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			_, _ = r.Reload(ctx) // logged, audited and in the metrics
		case m := <-asked:
			changes, err := r.Reload(ctx)
			rep := reloadReply{Kind: r.kind, ID: r.id}
			for _, c := range changes {
				rep.Changes = append(rep.Changes, c.String())
			}
			if err != nil {
				rep.Error = err.Error()
			}
			body, _ := json.Marshal(rep)
			if err := m.Respond(body); err != nil {
				r.log.Warn("answer a reload request", "err", err)
			}
		}
	}
}

// reloadAll stands for every component of a kind on the control subjects.
const reloadAll = "_all"

// reloadSubject is where a component of kind with id takes reload requests.
func reloadSubject(subj schemas.Subjects, kind, id string) string {
	return subj.Control(kind, id) + ".reload"
}

// listenOn has r take reload requests on nc for the component kind with id,
// under its own ID and as one of all.
func (r *reloader) listenOn(nc *nats.Conn, subj schemas.Subjects, kind, id string) {
	r.nc, r.kind, r.id = nc, kind, id
	r.listen = append(r.listen, reloadSubject(subj, kind, id), reloadSubject(subj, kind, reloadAll))
}

// reloadWait is how long rbee config reload gathers answers.
const reloadWait = 3 * time.Second

// runConfigReload asks the queens and hives to reload and prints each
// answer; it fails when one refused or none answered.
func runConfigReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("config reload", stderr)
	nf, err := addNATSFlags(fs, "rbee-control")
	if err != nil {
		return err
	}
	queenID := fs.String("queen", "", "only the queen with this ID")
	hiveID := fs.String("hive", "", "only the hive with this ID (it asks its workers in turn)")
	workerID := fs.String("worker", "", "only the worker with this ID (one run by hand; a hive's follow their hive)")
	if err := parse(fs, args); err != nil {
		return err
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	var targets []string
	switch {
	case *queenID != "" || *hiveID != "" || *workerID != "":
		if *queenID != "" {
			targets = append(targets, reloadSubject(subj, "queen", *queenID))
		}
		if *hiveID != "" {
			targets = append(targets, reloadSubject(subj, schemas.KindHive, *hiveID))
		}
		if *workerID != "" {
			targets = append(targets, reloadSubject(subj, schemas.KindWorker, *workerID))
		}
	default:
		targets = []string{reloadSubject(subj, "queen", reloadAll), reloadSubject(subj, schemas.KindHive, reloadAll)}
	}
	nc, _, err := nf.connect(ctx, newLogger(stderr, "warn"))
	if err != nil {
		return err
	}
	defer nc.Close()
	inbox := nc.NewRespInbox()
	replies := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe(inbox, replies)
	if err != nil {
		return err
	}
	defer func() { _ = sub.Unsubscribe() }()
	for _, t := range targets {
		if err := nc.PublishRequest(t, inbox, nil); err != nil {
			return fmt.Errorf("config reload: %w", err)
		}
	}
	timer := time.NewTimer(reloadWait)
	defer timer.Stop()
	answered, refused := 0, 0
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			switch {
			case answered == 0:
				return fmt.Errorf("config reload: none of %s answered within %v", strings.Join(targets, ", "), reloadWait)
			case refused > 0:
				return fmt.Errorf("config reload: %d of %d refused the new configuration", refused, answered)
			}
			return nil
		case m := <-replies:
			var rep reloadReply
			if err := json.Unmarshal(m.Data, &rep); err != nil {
				continue
			}
			answered++
			if rep.Error != "" {
				refused++
				fmt.Fprintf(stdout, "%s %s: refused, the configuration in force stays: %s\n", rep.Kind, rep.ID, rep.Error)
				continue
			}
			fmt.Fprintf(stdout, "%s %s: reloaded, %d changes\n", rep.Kind, rep.ID, len(rep.Changes))
			for _, c := range rep.Changes {
				fmt.Fprintf(stdout, "  %s\n", c)
			}
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
