package hive

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/goleak"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// The test binary doubles as a fake worker: started with HIVE_TEST_CHILD set,
// it behaves as that mode says instead of running tests.
const (
	envChild    = "HIVE_TEST_CHILD"     // sleep, log, crash, cannot-start, ignore-term, spawn, metrics or hive
	envReadyDir = "HIVE_TEST_READY_DIR" // a fake worker creates <dir>/<pid> once its signal handler is in place
	envNATS     = "HIVE_TEST_NATS_URL"  // for mode hive
	envModel    = "HIVE_TEST_MODEL"     // for mode hive
	envDataDir  = "HIVE_TEST_DATA_DIR"  // for mode hive
	envMetrics  = "HIVE_TEST_METRICS"   // for mode metrics: "dead" tells a URL where nothing answers
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(fakeWorker(mode))
	}
	goleak.VerifyTestMain(m)
}

// fakeWorker is the child's main.
func fakeWorker(mode string) int {
	switch mode {
	case "crash":
		return 1
	case "cannot-start":
		return ExitCodeCannotStart
	case "sleep":
		// Block until SIGTERM, then exit 0 as a drained worker does; log a
		// line at each SIGUSR1.
		term := notifyTerm()
		usr := make(chan os.Signal, 1)
		signal.Notify(usr, syscall.SIGUSR1)
		ready()
		for n := 1; ; n++ {
			select {
			case <-term:
				return 0
			case <-usr:
				slog.New(slog.NewJSONHandler(os.Stderr, nil)).Info("still writing", "n", n)
			}
		}
	case "log":
		// Write what a worker does, then sleep: slog JSON lines, a line of
		// another kind, and an unfinished line.
		term := notifyTerm()
		fmt.Fprintln(os.Stderr, `{"time":"2026-01-02T03:04:05.000006Z","level":"DEBUG+2","msg":"at its own time","component":"worker","worker_id":"not this one"}`)
		slog.New(slog.NewJSONHandler(os.Stderr, nil)).Warn("model is large",
			"slots", 4, "ratio", 0.5, "ok", true, slog.Group("engine", "threads", 2, "simd", "avx2"), "ctx", []int{1, 2})
		fmt.Fprintln(os.Stderr, "panic: not really")
		fmt.Fprint(os.Stdout, "unfinished")
		ready()
		<-term
		return 0
	case "ignore-term":
		// Receive SIGTERM and carry on: only SIGKILL ends this one.
		term := notifyTerm()
		ready()
		for range term {
		}
		return 0
	case "spawn":
		// Start a grandchild that ignores SIGTERM in our process group, then
		// exit on SIGTERM leaving it behind.
		term := notifyTerm()
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), envChild+"=ignore-term")
		if err := cmd.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "spawn:", err)
			return 2
		}
		ready()
		<-term
		return 0
	case "hive":
		return fakeHive()
	case "metrics":
		return fakeMetricsWorker()
	}
	fmt.Fprintf(os.Stderr, "%s=%q: unknown mode\n", envChild, mode)
	return 2
}

// fakeMetricsWorker serves metrics on the --metrics-addr it was given and
// tells where in heartbeats, as rbee worker does, until SIGTERM; each
// SIGHUP counts in fake_reloads_total.
func fakeMetricsWorker() int {
	args := map[string]string{}
	for i := 1; i+1 < len(os.Args); i++ {
		if strings.HasPrefix(os.Args[i], "--") {
			args[strings.TrimPrefix(os.Args[i], "--")] = os.Args[i+1]
		}
	}
	term := notifyTerm()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reg := prometheus.NewRegistry()
	jobs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "rbee_worker_jobs_total", Help: "Jobs."}, []string{"outcome"})
	jobs.WithLabelValues("completed").Add(2)
	queue := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "rbee_worker_queue_jobs", Help: "Queue."}, []string{"model", "state"})
	queue.WithLabelValues("not the hive's name", "waiting").Set(3)
	reloads := prometheus.NewCounter(prometheus.CounterOpts{Name: "fake_reloads_total", Help: "SIGHUPs."})
	reg.MustRegister(jobs, queue, reloads)
	l, err := net.Listen("tcp", args["metrics-addr"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "metrics:", err)
		return 2
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	url := "http://" + l.Addr().String() + "/metrics"
	if os.Getenv(envMetrics) == "dead" {
		dead, _ := net.Listen("tcp", "127.0.0.1:0")
		url = "http://" + dead.Addr().String() + "/metrics"
		dead.Close()
	}
	nc, err := nats.Connect(args["server"])
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	defer nc.Close()
	subj, _ := schemas.NewSubjects(args["prefix"])
	hb, _ := json.Marshal(schemas.WorkerHeartbeat{WorkerID: args["worker-id"], HiveID: args["hive-id"], Model: args["model-name"],
		State: schemas.WorkerReady, Slots: 1, PID: os.Getpid(), MetricsURL: url, Time: time.Now().UTC()})
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	ready()
	for {
		if err := nc.Publish(subj.Heartbeat(schemas.KindWorker, args["worker-id"]), hb); err != nil {
			fmt.Fprintln(os.Stderr, "heartbeat:", err)
		}
		select {
		case <-term:
			return 0
		case <-hup:
			reloads.Inc()
		case <-t.C:
		}
	}
}

// orphaningConfig is the hive of fakeHive: a test that kills it starts
// the same hive again, which adopts its workers only if it would start them
// with the same command line.
func orphaningConfig(url, model, dataDir string) Config {
	return Config{
		ID:         "orphaning-hive",
		Models:     []ModelSpec{{Name: "m", Path: model, Replicas: 2}},
		Executable: os.Args[0],
		ServerURL:  url,
		ExtraEnv:   []string{envChild + "=sleep"},
		StopGrace:  time.Second,
		DataDir:    dataDir,
	}
}

// fakeHive runs a hive of two sleeping workers until SIGTERM, for a test
// that kills it hard and watches its workers.
func fakeHive() int {
	nc, err := nats.Connect(os.Getenv(envNATS))
	if err != nil {
		fmt.Fprintln(os.Stderr, "hive:", err)
		return 2
	}
	defer nc.Close()
	h, err := New(nc, orphaningConfig(os.Getenv(envNATS), os.Getenv(envModel), os.Getenv(envDataDir)),
		slog.New(slog.NewTextHandler(os.Stderr, nil)), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "hive:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := h.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "hive:", err)
		return 1
	}
	return 0
}

func notifyTerm() chan os.Signal {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM)
	return c
}

// ready tells the test that this process's signal handling is in place.
func ready() {
	if dir := os.Getenv(envReadyDir); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), nil, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, "ready:", err)
		}
	}
}

// checkFor polls f until it returns nil or timeout has passed.
var checkFor = bustest.CheckFor

// recorder is a slog handler that keeps every record, so that tests can
// read what was logged, when, and with which attributes.
type recorder struct {
	mu      sync.Mutex
	records []record
	attrs   []slog.Attr
	parent  *recorder
}

type record struct {
	time  time.Time
	level slog.Level
	msg   string
	attrs map[string]slog.Value
	twice []string // keys the line carries more than once
}

func (r *recorder) root() *recorder {
	if r.parent != nil {
		return r.parent
	}
	return r
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &recorder{parent: r.root(), attrs: append(append([]slog.Attr(nil), r.attrs...), as...)}
}

func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	attrs := map[string]slog.Value{}
	var twice []string
	add := func(a slog.Attr) bool {
		if _, ok := attrs[a.Key]; ok {
			twice = append(twice, a.Key)
		}
		attrs[a.Key] = a.Value.Resolve()
		return true
	}
	for _, a := range r.attrs {
		add(a)
	}
	rec.Attrs(add)
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.records = append(root.records, record{time: rec.Time, level: rec.Level, msg: rec.Message, attrs: attrs, twice: twice})
	return nil
}

// find returns the records with message msg, oldest first.
func (r *recorder) find(msg string) []record {
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	var out []record
	for _, rec := range root.records {
		if rec.msg == msg {
			out = append(out, rec)
		}
	}
	return out
}
