package hive

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// modelFile returns the path of a file standing in for a GGUF model.
func modelFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(p, []byte("GGUF"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadConfigs(t *testing.T) {
	model := modelFile(t)
	good := func() Config {
		return Config{ID: "h1", ServerURL: "nats://127.0.0.1:4222", Models: []ModelSpec{{Name: "m", Path: model}}}
	}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.ID = "bad id" }, `hive id "bad id": want 1-128 letters, digits, '-' or '_'`},
		{func(c *Config) { c.ServerURL = "" }, "server URL for workers is required"},
		{func(c *Config) { c.Prefix = "a.b" }, `subject prefix "a.b"`},
		{func(c *Config) { c.Prefix, c.Subjects.Prefix = "a", "b" }, `prefix "a" differs from the subjects' prefix "b"`},
		{func(c *Config) { c.ExtraEnv = []string{"NATS_CREDS"} }, `extra env "NATS_CREDS": want NAME=value`},
		{func(c *Config) { c.ExtraEnv = []string{"=x"} }, `extra env "=x": want NAME=value`},
		{func(c *Config) { c.HeartbeatInterval = -time.Second }, "heartbeat interval -1s is negative"},
		{func(c *Config) { c.StopGrace = -time.Second }, "stop grace -1s is negative"},
		{func(c *Config) { c.WorkerLogMax = -1 }, "worker log max -1 bytes is negative"},
		{func(c *Config) { c.Restart.ResetAfter = -time.Second }, "restart policy: durations must not be negative"},
		{func(c *Config) { c.Restart.Jitter = 1.5 }, "restart policy: jitter 1.5: want 0 to 1"},
		{func(c *Config) { c.Restart.Jitter = math.NaN() }, "restart policy: jitter NaN: want 0 to 1"},
		{func(c *Config) { c.Restart.MaxRestarts = -1 }, "restart policy: max restarts -1: want 0 (unlimited) or more"},
		{func(c *Config) { c.Restart.InitialDelay, c.Restart.MaxDelay = time.Minute, time.Second },
			"restart policy: max delay 1s is below initial delay 1m0s"},
		{func(c *Config) { c.Models = nil }, "no models configured"},
		{func(c *Config) { c.Models[0].Name = "a.b" }, `models[0]: model name "a.b": want 1-128 letters, digits, '-', '_' or ':'`},
		{func(c *Config) { c.Models[0].Path = "" }, "models[0]: model m: path is required"},
		{func(c *Config) { c.Models[0].Path = filepath.Join(filepath.Dir(model), "nope.gguf") }, "models[0]: model m: stat "},
		{func(c *Config) { c.Models[0].Path = filepath.Dir(model) }, "is not a regular file"},
		{func(c *Config) { c.Models[0].Replicas = -1 }, "models[0]: model m: replicas -1 is negative"},
		{func(c *Config) { c.Models[0].Slots = -2 }, "models[0]: model m: slots -2 is negative"},
		{func(c *Config) { c.Models[0].ContextLength = -3 }, "models[0]: model m: context length -3 is negative"},
		{func(c *Config) { c.Models[0].Threads = -4 }, "models[0]: model m: threads -4 is negative"},
		{func(c *Config) { c.Models = append(c.Models, c.Models[0]) }, `models[1]: model "m" is listed twice`},
	} {
		cfg := good()
		tc.mod(&cfg)
		_, err := cfg.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.want, err, tc.want)
		}
	}
	if _, err := good().withDefaults(); err != nil {
		t.Fatalf("the good config fails: %v", err)
	}
}

func TestConfigDefaults(t *testing.T) {
	model := modelFile(t)
	cfg, err := Config{ServerURL: "nats://x:4222", Models: []ModelSpec{{Name: "m", Path: model}}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	exe, _ := os.Executable()
	switch {
	case cfg.ID != sanitizeID(host) || !schemas.ValidID(cfg.ID):
		t.Errorf("id %q from hostname %q", cfg.ID, host)
	case cfg.Executable != exe:
		t.Errorf("executable %q, want %q", cfg.Executable, exe)
	case cfg.Prefix != "rbee" || cfg.Subjects.Prefix != "rbee":
		t.Errorf("prefix %q, subjects %q, want rbee", cfg.Prefix, cfg.Subjects.Prefix)
	case cfg.HeartbeatInterval != 5*time.Second || cfg.StopGrace != 30*time.Second:
		t.Errorf("heartbeat %v, grace %v", cfg.HeartbeatInterval, cfg.StopGrace)
	case cfg.OrphanGrace != time.Minute || cfg.HungTimeout != 15*time.Second || cfg.ProgressTimeout != 2*time.Minute:
		t.Errorf("orphan grace %v, hung timeout %v, progress timeout %v", cfg.OrphanGrace, cfg.HungTimeout, cfg.ProgressTimeout)
	case cfg.LoadTimeout != 10*time.Minute || cfg.WorkerLogMax != 16<<20:
		t.Errorf("load timeout %v, worker log max %d", cfg.LoadTimeout, cfg.WorkerLogMax)
	case cfg.Restart != DefaultRestartPolicy():
		t.Errorf("restart %+v, want the default", cfg.Restart)
	case cfg.Models[0] != ModelSpec{Name: "m", Path: model, Replicas: 1, Slots: 1}:
		t.Errorf("model %+v", cfg.Models[0])
	}

	cfg, err = Config{
		ServerURL: "nats://x:4222", Models: []ModelSpec{{Name: "m", Path: model}},
		Subjects:    schemas.Subjects{Prefix: "team-a"},
		Restart:     RestartPolicy{InitialDelay: 2 * time.Minute, MaxRestarts: 3},
		LoadTimeout: -time.Second,
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Prefix != "team-a" {
		t.Errorf("prefix %q, want the subjects' team-a", cfg.Prefix)
	}
	if cfg.LoadTimeout != 0 {
		t.Errorf("load timeout %v, want 0 (never) for a negative one", cfg.LoadTimeout)
	}
	want := RestartPolicy{InitialDelay: 2 * time.Minute, MaxDelay: 2 * time.Minute, ResetAfter: 2 * time.Minute, MaxRestarts: 3, Interval: 10 * time.Minute,
		BreakerFailures: 5, BreakerWindow: 5 * time.Minute}
	if cfg.Restart != want {
		t.Errorf("restart %+v, want %+v", cfg.Restart, want)
	}
}

func TestWorkerID(t *testing.T) {
	if got := workerID("gpu-box", "llama3:8b", 2); got != "gpu-box-llama3_8b-2" {
		t.Errorf("workerID = %q", got)
	}
	long := strings.Repeat("h", 100)
	a := workerID(long, strings.Repeat("m", 60)+"a", 0)
	b := workerID(long, strings.Repeat("m", 60)+"b", 0)
	if a == b || !schemas.ValidID(a) || !schemas.ValidID(b) || len(a) != 128 {
		t.Errorf("long IDs %q and %q: want distinct valid IDs of 128 characters", a, b)
	}
	for in, want := range map[string]string{
		"node1.example.com": "node1_example_com",
		"-x":                "h_x",
		"":                  "hive",
		"ünï":               "h__n__", // two bytes each
	} {
		if got := sanitizeID(in); got != want || !schemas.ValidID(got) {
			t.Errorf("sanitizeID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWorkerArgs(t *testing.T) {
	cfg := Config{ID: "h1", ServerURL: "nats://q:4222", Prefix: "rbee", OrphanGrace: time.Minute, StopGrace: 30 * time.Second}
	got := workerArgs(cfg, ModelSpec{Name: "m", Path: "/m.gguf", Slots: 4}, "h1-m-0")
	want := []string{"worker", "--server", "nats://q:4222", "--prefix", "rbee", "--model-name", "m",
		"--model", "/m.gguf", "--worker-id", "h1-m-0", "--hive-id", "h1", "--slots", "4",
		"--orphan-grace", "1m0s", "--shutdown-grace", "25s"}
	if !slices.Equal(got, want) {
		t.Errorf("args %q\nwant %q", got, want)
	}
	got = workerArgs(cfg, ModelSpec{Name: "m", Path: "/m.gguf", Slots: 1, ContextLength: 2048, Threads: 8}, "h1-m-0")
	if tail := got[len(got)-4:]; !slices.Equal(tail, []string{"--ctx", "2048", "--threads", "8"}) {
		t.Errorf("args end %q, want --ctx 2048 --threads 8", tail)
	}
	cfg.WorkerMetrics, cfg.ConfigFile = true, "/etc/rbee/rbee.toml"
	got = workerArgs(cfg, ModelSpec{Name: "m", Path: "/m.gguf", Slots: 1}, "h1-m-0")
	if tail := got[len(got)-4:]; !slices.Equal(tail, []string{"--metrics-addr", "127.0.0.1:0", "--config", "/etc/rbee/rbee.toml"}) {
		t.Errorf("args end %q, want a loopback metrics listener and the hive's config file", tail)
	}
}

func TestNew(t *testing.T) {
	model := modelFile(t)
	cfg := Config{
		ID: "h1", ServerURL: "nats://127.0.0.1:4222",
		Models: []ModelSpec{{Name: "m", Path: model, Replicas: 2}, {Name: "n", Path: model}},
	}
	logger := slog.New(slog.DiscardHandler)
	if _, err := New(nil, cfg, logger, nil); err == nil {
		t.Error("New without a connection: nil error")
	}
	nc, _ := bustest.Connect(t, bustest.RunServer(t))
	reg := prometheus.NewRegistry()
	h, err := New(nc, cfg, logger, reg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, st := range h.Workers() {
		if st.State != StatePending || st.PID != 0 {
			t.Errorf("%+v before Run, want pending", st)
		}
		ids = append(ids, st.ID)
	}
	if want := []string{"h1-m-0", "h1-m-1", "h1-n-0"}; !slices.Equal(ids, want) {
		t.Errorf("workers %q, want %q", ids, want)
	}
	if h.ID() != "h1" {
		t.Errorf("ID %q", h.ID())
	}
	if _, err := New(nc, cfg, logger, reg); err == nil || !strings.Contains(err.Error(), "register") {
		t.Errorf("second New on one registry: %v, want a registration error", err)
	}

	cfg.Models = []ModelSpec{{Name: "a:b", Path: model}, {Name: "a_b", Path: model}}
	if _, err := New(nc, cfg, logger, nil); err == nil || !strings.Contains(err.Error(), "worker ID h1-a_b-0 is already taken") {
		t.Errorf("colliding worker IDs: %v", err)
	}
}
