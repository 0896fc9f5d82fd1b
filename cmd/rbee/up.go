package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/hive"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/dirlock"
	"github.com/rbee-dev/rbee/queen"
	"github.com/rbee-dev/rbee/schemas"
)

// runUp starts a whole installation in one process tree: an embedded NATS
// server, the queen and the hive in this process, and the hive's worker
// processes as children. Ctrl-C stops the queen and the hive, which stops
// its workers, and then the server.
func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	host, _ := os.Hostname()
	var (
		natsHost, dataDir, hiveDir, nkeysDir *string
		natsPort                             *int
		natsAuth                             *bool
		opts                                 *hiveOptions
	)
	// rbee up runs its own NATS server: of the [nats] section only the
	// prefix applies.
	l := &configLoader{name: "up", args: args, bind: func(fs *flag.FlagSet, f *config.File) {
		fs.StringVar(&f.NATS.Prefix, "prefix", f.NATS.Prefix, "subject prefix (nats.prefix; env RBEE_PREFIX)")
		fs.StringVar(&f.Log.Level, "log-level", f.Log.Level, "debug, info, warn or error (log.level; env RBEE_LOG_LEVEL)")
		natsHost = fs.String("nats-host", "127.0.0.1", "embedded NATS listen host")
		natsPort = fs.Int("nats-port", 4222, "embedded NATS port (-1: a free one)")
		dataDir = fs.String("data-dir", defaultDataDir(), "JetStream storage of the embedded server")
		bindQueenFlags(fs, f)
		opts = bindHiveFlags(fs, f, host)
		hiveDir = fs.String("hive-data-dir", f.Hive.DataDir, "the hive's lock and record of running workers (hive.data_dir; default: as rbee hive --data-dir)")
		natsAuth = fs.Bool("nats-auth", true, "the embedded server accepts only rbee's identities, each with least privilege (false: anyone who reaches it may do anything)")
		nkeysDir = fs.String("nkeys-dir", defaultNKeysDir(), "where the identities' nkey seeds are kept (env RBEE_NKEYS_DIR); other rbee commands find theirs here")
	}}
	f, err := l.load(stdout, stderr)
	if err != nil {
		return validated(err)
	}
	if *hiveDir == "" {
		*hiveDir = defaultHiveDataDir(f.Hive.ID)
	}
	subj, err := schemas.NewSubjects(f.NATS.Prefix)
	if err != nil {
		return usageError{err}
	}
	qcfg, err := queenConfig(f, subj)
	if err != nil {
		return err
	}
	level := levelOf(f)
	log := newLeveledLogger(stderr, level)
	hcfg, err := hiveConfig(f, opts, configPath(args))
	if err != nil {
		return err
	}
	// The queen's /metrics serves the hive's workers' too.
	hcfg.WorkerMetrics = true
	models := hcfg.Models

	// Two servers on one JetStream directory corrupt each other's state.
	if *dataDir != "" {
		lock, err := dirlock.Acquire(*dataDir)
		if err != nil {
			return fmt.Errorf("nats data directory: %w", err)
		}
		defer lock.Release()
	}
	// Each part connects as its own identity; without them every
	// connection may do anything.
	var ids *bus.Identities
	as := func(cfg bus.Config, _ bus.Role) bus.Config { return cfg }
	if *natsAuth {
		if ids, err = bus.LoadIdentities(*nkeysDir); err != nil {
			return fmt.Errorf("nats identities: %w", err)
		}
		as = ids.Config
	}
	ecfg := bus.EmbeddedConfig{
		Host: *natsHost, Port: *natsPort, DataDir: *dataDir, ServerName: "rbee-" + hiveID(host),
		Logger: natsServerLogger(stderr, f.Log.Level),
	}
	if ids != nil {
		ecfg.Users = ids.Users(subj)
	}
	srv, err := bus.StartEmbedded(ctx, ecfg)
	if err != nil {
		return fmt.Errorf("start nats: %w", err)
	}
	defer srv.Shutdown()
	url := srv.ClientURL()
	local := bus.Config{URL: url, InProcess: srv.Server()}
	qconn := local
	qconn.Name = "rbee-up-queen"
	nc, js, err := dialProvisioned(ctx, as(qconn, bus.RoleQueen), log.With("component", "bus"), subj, f.Provisioning())
	if err != nil {
		return err
	}
	defer nc.Close()
	hconn := local
	hconn.Name = "rbee-up-hive"
	hnc, _, err := dial(ctx, as(hconn, bus.RoleHive), log.With("component", "bus"))
	if err != nil {
		return err
	}
	defer hnc.Close()
	workerEnv := hcfg.ExtraEnv
	contexts := ""
	if ids != nil {
		workerEnv = append(workerEnv, "NATS_NKEY="+ids.SeedFile(bus.RoleWorker), "NATS_INBOX_PREFIX="+bus.InboxPrefix(bus.RoleWorker))
		if contexts, err = writeNATSContexts(url, ids); err != nil {
			log.Warn("nats CLI contexts not written", "err", err)
		}
	}

	// One registry, the queen's, holds the queen's, the hive's and the
	// reload metrics, and the queen's /metrics serves it with the workers'.
	qreg := newRegistry()
	hcfg.ServerURL, hcfg.Prefix, hcfg.Subjects, hcfg.ExtraEnv, hcfg.DataDir = url, subj.Prefix, subj, workerEnv, *hiveDir
	h, err := hive.New(hnc, hcfg, log, qreg)
	if err != nil {
		return err
	}
	qlog := log.With("component", "queen")
	q, err := queen.New(nc, qcfg, qlog, served{qreg, withWorkers(qreg, h, qlog)})
	if err != nil {
		return err
	}
	// The workers' logs say little while they load: their bars say more.
	stopLoads, err := followHiveLoads(hnc, subj, h.ID(), stderr)
	if err != nil {
		return err
	}
	defer stopLoads()
	r, err := newReloader(l, f, level, log, qreg)
	if err != nil {
		return err
	}
	r.audit = q.Audit
	r.apply = []applier{queenApplier(q, qcfg.Keys, qlog), hiveApplier(h)}
	r.reloaded = []func(){func() { h.ReloadWorkers() }}
	// One process, one reload: it answers as the queen, and to the hive's
	// own ID.
	r.listenOn(nc, subj, "queen", q.ID())
	r.listen = append(r.listen, reloadSubject(subj, schemas.KindHive, h.ID()))

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var banner sync.WaitGroup
	banner.Go(func() {
		select {
		case <-q.Ready():
		case <-runCtx.Done():
			return
		}
		if waitForWorkers(runCtx, js, subj, models) != nil {
			return // shutting down before the workers came up
		}
		keyHeader := ""
		if qcfg.Keys != nil {
			keyHeader = ` -H "Authorization: Bearer $RBEE_API_KEY"`
		}
		natsLine := url
		if ids != nil {
			natsLine += " (identities in " + ids.Dir + "; nats CLI: nats --context rbee, nats --context rbee-operator)"
			if contexts == "" {
				natsLine = url + " (identities in " + ids.Dir + ")"
			}
		} else {
			natsLine += " (no authentication: anyone who reaches it may do anything)"
		}
		fmt.Fprintf(stdout, "rbee is up.\n  OpenAI-compatible API: http://%s/v1 (models: %s)\n  NATS:                  %s\n"+
			"Try:\n  curl -s http://%s/v1/chat/completions -H 'Content-Type: application/json'%s \\\n"+
			"    -d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}],\"max_tokens\":64}'\n"+
			"Press Ctrl-C to stop.\n", q.Addr(), modelNames(models), natsLine, q.Addr(), keyHeader, models[0].Name)
	})
	defer skipGraceOnSecondSignal(runCtx, h, log)()
	// The first of queen and hive to stop (Ctrl-C, or a failure) stops the other.
	err = runGroup(runCtx, actor{"queen", q.Run}, actor{"hive", h.Run}, actor{"reload", r.Run})
	cancel()
	banner.Wait()
	return err
}

// served registers with one registry and gathers from another gatherer:
// the queen's /metrics serves more than it registers.
type served struct {
	prometheus.Registerer
	prometheus.Gatherer
}

// skipGraceOnSecondSignal has a Ctrl-C (or SIGTERM) that comes after
// ctx ended, while the hive waits for its workers to drain, kill them at
// once. The returned func stops listening.
func skipGraceOnSecondSignal(ctx context.Context, h *hive.Hive, log *slog.Logger) func() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-done:
			return
		}
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		select {
		case <-sigs:
			log.Warn("second stop signal: killing the workers without waiting for them to drain")
			h.SkipGrace()
		case <-done:
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// natsServerLogger keeps the embedded server's start-up banner out of an
// info-level log: its warnings still show, and everything at debug.
func natsServerLogger(w io.Writer, level string) *slog.Logger {
	if level == "info" {
		level = "warn"
	}
	return newLogger(w, level)
}

// waitForWorkers returns once every model has a ready worker in the bucket.
func waitForWorkers(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, models []hive.ModelSpec) error {
	kv, err := js.KeyValue(ctx, subj.WorkersBucket())
	if err != nil {
		return err
	}
	watch, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() {
		_ = watch.Stop()
		for range watch.Updates() { // lets the watcher's goroutine see the stop and exit
		}
	}()
	ready := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-watch.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var hb schemas.WorkerHeartbeat
			if json.Unmarshal(e.Value(), &hb) == nil && hb.State == schemas.WorkerReady {
				ready[hb.Model] = true
			}
			all := true
			for _, m := range models {
				all = all && ready[m.Name]
			}
			if all {
				return nil
			}
		}
	}
}

func modelNames(models []hive.ModelSpec) string {
	names := make([]string, len(models))
	for i, m := range models {
		names[i] = m.Name
	}
	return strings.Join(names, ", ")
}

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "rbee", "nats")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "rbee", "nats")
	}
	return ""
}
