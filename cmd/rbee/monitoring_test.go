package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/hive"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/queen"
	"github.com/rbee-dev/rbee/worker"
)

// registeredMetrics are the names of every metric the queen, a hive and a
// worker register, as cmd/rbee wires them, vectors without a child yet
// included: the registries' descriptions name them all. A histogram adds
// its _bucket, _sum and _count series; Prometheus adds up.
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	srv, nc, _, subj := bustest.Provisioned(t)
	regs := map[string]*prometheus.Registry{"queen": newRegistry(), "hive": newRegistry(), "worker": newRegistry()}
	if _, err := queen.New(nc, queen.Config{Subjects: subj}, nil, regs["queen"]); err != nil {
		t.Fatal(err)
	}
	if _, err := hive.New(nc, hive.Config{ID: "h", ServerURL: srv.ClientURL(), Subjects: subj, Models: []hive.ModelSpec{{Name: "stories260K", Path: modelPath}}}, nil, regs["hive"]); err != nil {
		t.Fatal(err)
	}
	m, err := infer.Load(modelPath, infer.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if _, err := worker.New(nc, m, worker.Config{ID: "w", Model: "stories260K", Subjects: subj, ContextLength: 128}, nil, regs["worker"]); err != nil {
		t.Fatal(err)
	}
	if err := modelLoadSeconds(regs["worker"], time.Second); err != nil {
		t.Fatal(err)
	}
	for name, reg := range regs {
		if _, err := newReloader(nil, config.File{}, nil, slog.New(slog.DiscardHandler), reg); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{"up": true}
	for _, reg := range regs {
		ch := make(chan *prometheus.Desc)
		go func() { reg.Describe(ch); close(ch) }()
		for d := range ch {
			sm := fqName.FindStringSubmatch(d.String())
			if sm == nil {
				t.Fatalf("no name in %s", d)
			}
			names[sm[1]] = true
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[sm[1]+s] = true
			}
		}
	}
	return names
}

// metricNames are the metrics expr selects.
func metricNames(t *testing.T, expr string) []string {
	t.Helper()
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	var out []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			out = append(out, vs.Name)
		}
		return nil
	})
	if len(out) == 0 {
		t.Errorf("%q selects no metric", expr)
	}
	return out
}

// dashboardExprs are the PromQL expressions of every panel target, with
// Grafana's $__rate_interval as a duration Prometheus parses.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../docs/monitoring/rbee.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	exprs := map[string]string{}
	for _, p := range dash.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			exprs[fmt.Sprintf("panel %q target %d", p.Title, i)] = strings.ReplaceAll(tg.Expr, "$__rate_interval", "5m")
		}
	}
	if len(exprs) < 20 {
		t.Fatalf("dashboard %q has %d queries; want the issue's metric set", dash.Title, len(exprs))
	}
	return exprs
}

// alertExprs parses the alert rules with Prometheus's rule parser, which
// checks the PromQL and the templates too.
func alertExprs(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile("../../docs/monitoring/rbee-alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	groups, errs := rulefmt.Parse(data, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("rbee-alerts.yml: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}
	exprs := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Annotations["summary"] == "" || r.Labels["severity"] == "" {
				t.Errorf("rule %+v: want an alert with a severity and a summary", r)
			}
			exprs["alert "+r.Alert] = r.Expr
		}
	}
	if len(exprs) < 8 {
		t.Errorf("%d alerts, want at least 8", len(exprs))
	}
	return exprs
}

func TestDashboardAndAlertsUseRegisteredMetrics(t *testing.T) {
	known := registeredMetrics(t)
	for _, want := range []string{"rbee_queen_requests_total", "rbee_hive_workers_running", "rbee_worker_queue_jobs", "rbee_worker_model_load_seconds"} {
		if !known[want] {
			t.Fatalf("the registries do not describe %s: the name collection is broken", want)
		}
	}
	used := map[string]bool{}
	for src, exprs := range map[string]map[string]string{"rbee.json": dashboardExprs(t), "rbee-alerts.yml": alertExprs(t)} {
		for where, expr := range exprs {
			for _, name := range metricNames(t, expr) {
				used[name] = true
				if !known[name] {
					t.Errorf("%s, %s: metric %s is registered by no component", src, where, name)
				}
			}
		}
	}
	// The list: each of these is on the dashboard.
	for _, want := range []string{
		"rbee_queen_requests_total", "rbee_queen_time_to_first_token_seconds_bucket", "rbee_worker_inter_token_latency_seconds_bucket",
		"rbee_worker_queue_jobs", "rbee_worker_queue_wait_seconds_bucket", "rbee_queen_jobs_finished_total", "rbee_worker_jobs_total",
		"rbee_worker_prompt_tokens_total", "rbee_worker_tokens_generated_total", "rbee_worker_decode_tokens_per_second_bucket",
		"rbee_worker_batch_sequences", "rbee_worker_kv_blocks_in_use", "rbee_worker_model_load_seconds", "rbee_worker_state", "rbee_hive_worker_restarts_total",
		"rbee_hive_spawn_rejected_total", "rbee_hive_workers_force_killed_total", "rbee_hive_shutdown_duration_seconds_bucket",
	} {
		if !used[want] {
			t.Errorf("no dashboard panel or alert uses %s", want)
		}
	}
	if t.Failed() {
		var all []string
		for n := range known {
			all = append(all, n)
		}
		sort.Strings(all)
		t.Logf("registered: %s", strings.Join(all, " "))
	}
}

// scrape is the text of url's /metrics.
func scrape(url string) (string, error) {
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %d", resp.StatusCode)
	}
	return string(body), nil
}

// TestHiveAndWorkerServeMetrics runs a hive with --metrics-addr and a
// worker of its own with --metrics-addr, and scrapes both over HTTP as
// Prometheus would.
func TestHiveAndWorkerServeMetrics(t *testing.T) {
	// The test's server has no identities: seeds left in the user's
	// configuration directory must not be presented.
	t.Setenv("RBEE_NKEYS_DIR", t.TempDir())
	srv, _, _, _ := bustest.Provisioned(t)
	hiveAddr, workerAddr := freeAddr(t), freeAddr(t)
	hiveCmd := start(t, "hive", "--server", srv.ClientURL(), "--id", "metrics", "--serve", "stories260K="+modelPath,
		"--ctx", "128", "--threads", "1", "--cache-dir", t.TempDir(), "--data-dir", t.TempDir(), "--metrics-addr", hiveAddr)
	workerCmd := start(t, "worker", "--server", srv.ClientURL(), "--model-name", "solo", "--model", modelPath,
		"--ctx", "128", "--threads", "1", "--metrics-addr", workerAddr)
	for _, c := range []struct{ addr, want string }{
		{hiveAddr, `rbee_hive_workers_running{model="stories260K"} 1`},
		{workerAddr, `rbee_worker_state{state="ready"} 1`},
		{workerAddr, `rbee_worker_queue_jobs{model="solo",state="waiting"} 0`},
		{workerAddr, `rbee_worker_model_load_seconds `},
	} {
		poll(t, 60*time.Second, func() error {
			text, err := scrape("http://" + c.addr)
			if err != nil {
				return err
			}
			if !strings.Contains(text, c.want) {
				return fmt.Errorf("%s/metrics has no %q", c.addr, c.want)
			}
			return nil
		})
	}
	resp, err := http.Get("http://" + hiveAddr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("hive /healthz: %d", resp.StatusCode)
	}
	stop(t, workerCmd, os.Interrupt)
	stop(t, hiveCmd, os.Interrupt)
	if _, err := scrape("http://" + hiveAddr); err == nil {
		t.Error("the hive's metrics listener still answers after the hive stopped")
	}
}

// workerSample is the value of name for the worker id in the text of a
// /metrics, with the other labels of want; ok false when there is none.
func workerSample(t *testing.T, text, name, id string, want map[string]string) (float64, bool) {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	for _, m := range fams[name].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := labels["worker_id"] == id
		for k, v := range want {
			match = match && labels[k] == v
		}
		if match {
			return m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue(), true
		}
	}
	return 0, false
}

// A hive with --metrics-addr and a configuration file: its /metrics holds
// its worker's metrics, labelled with the worker and its model, lint-clean;
// a SIGHUP with log.level debug in the file reaches the worker, whose debug
// lines then come through the hive's log with their component once, and
// whose reload its metrics show; rbee config reload --worker asks the
// worker itself over the bus.
func TestHiveServesAndReloadsItsWorkers(t *testing.T) {
	t.Setenv("RBEE_NKEYS_DIR", t.TempDir())
	srv, _, _, _ := bustest.Provisioned(t)
	url := srv.ClientURL()
	path := filepath.Join(t.TempDir(), "rbee.toml")
	writeFile(t, path, "[log]\nlevel = 'info'\n")
	httpAddr, hiveAddr := freeAddr(t), freeAddr(t)
	start(t, "queen", "--server", url, "--http", httpAddr)
	logs := &logBuffer{}
	hiveCmd := exec.Command(rbeeBin, "hive", "--config", path, "--server", url, "--id", "mh", "--serve", "stories260K="+modelPath,
		"--ctx", "128", "--threads", "1", "--cache-dir", t.TempDir(), "--data-dir", t.TempDir(), "--metrics-addr", hiveAddr)
	hiveCmd.Stderr = logs
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RBEE_LOG_LEVEL=") { // the file's level, not the test runner's
			hiveCmd.Env = append(hiveCmd.Env, kv)
		}
	}
	if err := hiveCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if hiveCmd.ProcessState == nil {
			_ = hiveCmd.Process.Kill()
			_ = hiveCmd.Wait()
		}
	})
	const id = "mh-stories260K-0"
	hiveMetrics := func(name string, labels map[string]string, ok func(float64) bool) string {
		t.Helper()
		var text string
		poll(t, 60*time.Second, func() error {
			var err error
			if text, err = scrape("http://" + hiveAddr); err != nil {
				return err
			}
			if v, found := workerSample(t, text, name, id, labels); !found || !ok(v) {
				return fmt.Errorf("the hive's /metrics: %s%v of %s is %v (found %v)", name, labels, id, v, found)
			}
			return nil
		})
		return text
	}
	stories := map[string]string{"model": "stories260K"}
	hiveMetrics("rbee_worker_state", map[string]string{"model": "stories260K", "state": "ready"}, func(v float64) bool { return v == 1 })
	if _, err := completionTokens(t, httpAddr, "stories260K"); err != nil {
		t.Fatal(err)
	}
	text := hiveMetrics("rbee_worker_jobs_total", map[string]string{"model": "stories260K", "outcome": "completed"}, func(v float64) bool { return v >= 1 })
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint the hive's /metrics: %s: %s", p.Metric, p.Text)
	}
	if !strings.Contains(text, `rbee_hive_workers_running{model="stories260K"} 1`) {
		t.Error("the hive's own metrics are not in its /metrics with its worker's")
	}
	if strings.Contains(logs.String(), `"level":"DEBUG"`) {
		t.Fatal("a debug line at log level info")
	}

	before := float64(time.Now().Unix())
	writeFile(t, path, "[log]\nlevel = 'debug'\n")
	if err := hiveCmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	hiveMetrics("rbee_config_last_reload_success_timestamp_seconds", stories, func(v float64) bool { return v >= before })
	hiveMetrics("rbee_config_last_reload_successful", stories, func(v float64) bool { return v == 1 })
	if _, err := completionTokens(t, httpAddr, "stories260K"); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() error {
		for line := range strings.SplitSeq(logs.String(), "\n") {
			if strings.Contains(line, `"msg":"job started"`) && strings.Contains(line, `"level":"DEBUG"`) {
				if n := strings.Count(line, `"component":`); n != 1 || !strings.Contains(line, `"component":"worker"`) {
					t.Errorf("the worker's line says its component %d times, want once, worker:\n%s", n, line)
				}
				return nil
			}
		}
		return errors.New("no debug line of the worker's in the hive's log")
	})

	noKeys := []string{"RBEE_NKEYS_DIR=" + t.TempDir()}
	if out, code := rbeeRun(t, noKeys, "config", "reload", "--worker", id, "--server", url); code != 0 ||
		!strings.Contains(out, "worker "+id+": reloaded, 0 changes") {
		t.Errorf("config reload --worker: %d\n%s", code, out)
	}
	stop(t, hiveCmd, syscall.SIGTERM)
}
