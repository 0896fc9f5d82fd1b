package hive

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/rbee-dev/rbee/bus/bustest"
)

// The test binary doubles as a fake worker: started with HIVE_TEST_CHILD set,
// it behaves as that mode says instead of running tests.
const (
	envChild    = "HIVE_TEST_CHILD"     // sleep, log, crash, cannot-start, ignore-term, spawn or hive
	envReadyDir = "HIVE_TEST_READY_DIR" // a fake worker creates <dir>/<pid> once its signal handler is in place
	envNATS     = "HIVE_TEST_NATS_URL"  // for mode hive
	envModel    = "HIVE_TEST_MODEL"     // for mode hive
	envDataDir  = "HIVE_TEST_DATA_DIR"  // for mode hive
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
		fmt.Fprintln(os.Stderr, `{"time":"2026-01-02T03:04:05.000006Z","level":"DEBUG+2","msg":"at its own time","worker_id":"not this one"}`)
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
	}
	fmt.Fprintf(os.Stderr, "%s=%q: unknown mode\n", envChild, mode)
	return 2
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
	for _, a := range r.attrs {
		attrs[a.Key] = a.Value.Resolve()
	}
	rec.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.Resolve()
		return true
	})
	root := r.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	root.records = append(root.records, record{time: rec.Time, level: rec.Level, msg: rec.Message, attrs: attrs})
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
