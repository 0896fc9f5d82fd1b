package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/schemas"
)

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// rbeeRun runs the binary with env added and returns its output and exit
// status.
func rbeeRun(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, rbeeBin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("rbee %v: %v", args, err)
	return "", 0
}

// Flags beat the environment, which beats the file, which beats the
// defaults; --config and RBEE_CONFIG name the file.
func TestConfigPrecedence(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rbee.toml")
	writeFile(t, path, "[queen]\nidle_timeout = '20s'\nfirst_token_timeout = '21s'\ndefault_timeout = '22m'\n")
	t.Setenv("RBEE_QUEEN_FIRST_TOKEN_TIMEOUT", "31s")
	t.Setenv("RBEE_QUEEN_IDLE_TIMEOUT", "30s")
	t.Setenv("RBEE_CONFIG", "")
	load := func(args ...string) config.File {
		t.Helper()
		l := &configLoader{name: "queen", args: args, sections: config.QueenSections, bind: func(fs *flag.FlagSet, f *config.File) {
			bindNATSFlags(fs, f, "test")
			bindQueenFlags(fs, f)
		}}
		f, err := l.load(io.Discard, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	f := load("--config", path, "--stream-idle-timeout", "40s")
	q := f.Queen
	if q.IdleTimeout != 40*time.Second || q.FirstTokenTimeout != 31*time.Second || q.DefaultTimeout != 22*time.Minute ||
		q.KeepAliveTimeout != config.Default().Queen.KeepAliveTimeout {
		t.Errorf("flag, env, file, default: %+v", q)
	}
	t.Setenv("RBEE_CONFIG", path)
	if f := load(); f.Queen.DefaultTimeout != 22*time.Minute || f.Queen.IdleTimeout != 30*time.Second {
		t.Errorf("RBEE_CONFIG not read: %+v", f.Queen)
	}
}

// A bad configuration is refused with every problem before anything
// starts; a good one is said valid; print masks secrets.
func TestConfigValidateAndPrint(t *testing.T) {
	dir := t.TempDir()
	bad, good := filepath.Join(dir, "bad.toml"), filepath.Join(dir, "good.toml")
	writeFile(t, bad, "[queen]\nidle_timeout = '-1s'\n[provision]\nreplicas = 2\n[worker]\nack_wait = '1ms'\n")
	writeFile(t, good, "[queen]\nidle_timeout = '5s'\n[nats]\nuser = 'u'\npassword = 'hunter2'\n")

	out, code := rbeeRun(t, nil, "config", "validate", bad)
	for _, want := range []string{"queen.idle_timeout = -1s: want more than 0", "provision.replicas = 2: want 1, 3 or 5", "worker.ack_wait = 1ms: want at least 100ms"} {
		if !strings.Contains(out, want) {
			t.Errorf("config validate: no %q in\n%s", want, out)
		}
	}
	if code != 2 {
		t.Errorf("config validate of a bad file exited %d, want 2", code)
	}
	if out, code := rbeeRun(t, nil, "config", "validate", good); code != 0 || !strings.Contains(out, "valid") {
		t.Errorf("config validate of a good file: %d %s", code, out)
	}
	// Nothing listens on port 1: a command that started would fail
	// otherwise, or hang. A worker exits as one that can never start.
	for _, args := range [][]string{{"queen", "--server", "nats://127.0.0.1:1"}, {"hive", "--server", "nats://127.0.0.1:1"},
		{"worker", "--server", "nats://127.0.0.1:1"}, {"provision", "--server", "nats://127.0.0.1:1"}, {"up", "--nats-port", "-1"}} {
		cmd := args[0]
		out, code := rbeeRun(t, nil, append(args, "--config", bad, "--validate-config")...)
		want := 2
		if cmd == "worker" {
			want = 78
		}
		if code != want || !strings.Contains(out, "problems") {
			t.Errorf("%s --validate-config of a bad file: %d %s", cmd, code, out)
		}
	}
	if out, code := rbeeRun(t, nil, "queen", "--config", good, "--validate-config"); code != 0 || strings.TrimSpace(out) != "configuration valid" {
		t.Errorf("queen --validate-config of a good file: %d %s", code, out)
	}
	if out, code := rbeeRun(t, nil, "queen", "--config", filepath.Join(dir, "missing.toml")); code != 2 || !strings.Contains(out, "missing.toml") {
		t.Errorf("a missing file: %d %s", code, out)
	}

	// --print-config: the flags over the environment over the file.
	out, code = rbeeRun(t, []string{"RBEE_QUEEN_IDLE_TIMEOUT=7s", "RBEE_QUEEN_DEFAULT_TIMEOUT=3m"}, "queen", "--config", good, "--print-config", "--default-timeout", "6m")
	if code != 0 || strings.Contains(out, "hunter2") || !strings.Contains(out, `idle_timeout = "7s"`) || !strings.Contains(out, `default_timeout = "6m0s"`) {
		t.Errorf("queen --print-config: %d\n%s", code, out)
	}
	out, code = rbeeRun(t, []string{"NATS_TOKEN=tok-secret", "RBEE_QUEEN_IDLE_TIMEOUT=7s"}, "config", "print", good)
	if code != 0 || strings.Contains(out, "hunter2") || strings.Contains(out, "tok-secret") || !strings.Contains(out, `idle_timeout = "7s"`) {
		t.Errorf("config print (env over the file, secrets masked): %d\n%s", code, out)
	}
}

func TestHelpAndVersion(t *testing.T) {
	if exitCode(flag.ErrHelp) != 0 {
		t.Errorf("exit code of -h: %d", exitCode(flag.ErrHelp))
	}
	for _, args := range [][]string{{"-h"}, {"queen", "-h"}, {"run", "--help"}, {"config", "-h"}} {
		if _, code := rbeeRun(t, nil, args...); code != 0 {
			t.Errorf("rbee %v exited %d, want 0", args, code)
		}
	}
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, code := rbeeRun(t, nil, args...)
		if code != 0 || !strings.HasPrefix(out, "rbee ") || !strings.Contains(out, "go1.") || !strings.Contains(out, "commit:") {
			t.Errorf("rbee %v: %d\n%s", args, code, out)
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	for _, c := range []struct {
		args  []string
		words string
		max   int
	}{
		{[]string{"stories260K", "Once upon a time", "--max-tokens", "10"}, "stories260K|Once upon a time", 10},
		{[]string{"--max-tokens", "3", "a", "b"}, "a|b", 3},
		{[]string{"a", "--max-tokens=4", "b"}, "a|b", 4},
		{[]string{"a", "--", "--max-tokens", "5"}, "a|--max-tokens|5", 1},
	} {
		fs := newFlags("test", io.Discard)
		n := fs.Int("max-tokens", 1, "")
		words, err := parseInterspersed(fs, c.args)
		if err != nil || strings.Join(words, "|") != c.words || *n != c.max {
			t.Errorf("%q: %q %d %v, want %q %d", c.args, words, *n, err, c.words, c.max)
		}
	}
}

// With no server, client commands fail within a few seconds with one line;
// rbee run takes its flags after the model and the prompt.
func TestClientsFailFastWithoutServer(t *testing.T) {
	dead := "nats://" + freeAddr(t)
	for _, args := range [][]string{
		{"run", "stories260K", "Once upon a time", "--max-tokens", "10", "--server", dead},
		{"models", "--server", dead},
		{"workers", "ls", "--server", dead},
	} {
		start := time.Now()
		out, code := rbeeRun(t, []string{"RBEE_NKEYS_DIR=" + t.TempDir()}, args...)
		took := time.Since(start)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if code == 0 || took > 10*time.Second || len(lines) != 1 || !strings.Contains(out, "no NATS server answers at "+dead) {
			t.Errorf("rbee %v: exit %d after %v:\n%s", args[0], code, took, out)
		}
	}
}

// upWithConfig runs rbee up with a configuration file and env, on free
// ports and without NATS authentication, and returns once it is ready.
func upWithConfig(t *testing.T, cfgPath string, env []string, logs io.Writer) (*exec.Cmd, string, string) {
	t.Helper()
	httpAddr := freeAddr(t)
	dir := t.TempDir()
	cmd := exec.Command(rbeeBin, "up", "--config", cfgPath, "--http", httpAddr, "--nats-port", "-1", "--nats-auth=false",
		"--data-dir", dir+"/nats", "--hive-data-dir", dir+"/hive", "--cache-dir", dir+"/cache")
	cmd.Stderr = logs
	// The file's log level, not the one of whoever runs the tests.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RBEE_LOG_LEVEL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	banner := make(chan string, 1)
	go func() {
		var b strings.Builder
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "Ctrl-C") {
				banner <- b.String()
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case text := <-banner:
		return cmd, httpAddr, regexp.MustCompile(`nats://[0-9.]+:[0-9]+`).FindString(text)
	case <-time.After(60 * time.Second):
		t.Fatal("rbee up printed no banner within 60s")
	}
	return nil, "", ""
}

// completionTokens asks model for a completion without max_tokens and
// returns how many tokens came, so the queen's default shows.
func completionTokens(t *testing.T, httpAddr, model string) (int, error) {
	t.Helper()
	resp := postJSON(t, "http://"+httpAddr+"/v1/completions", map[string]any{"model": model, "prompt": "Once upon a time", "temperature": 0})
	defer resp.Body.Close()
	var out struct {
		Usage struct {
			CompletionTokens int `json:"completion_tokens"`
		} `json:"usage"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("completion with %s: %d %s", model, resp.StatusCode, b)
	}
	err := json.NewDecoder(resp.Body).Decode(&out)
	return out.Usage.CompletionTokens, err
}

func reloadMetric(t *testing.T, httpAddr string) string {
	t.Helper()
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return regexp.MustCompile(`(?m)^rbee_config_last_reload_successful .*$`).FindString(string(b))
}

// SIGHUP applies a valid file while rbee up runs (whose bundled model
// starts without a warning about its context): a new log level, a new
// queue limit, a new default and a model added to the hive, which starts
// serving; the environment keeps overriding the file. An invalid file
// keeps all of that and sets the reload metric to 0.
func TestSIGHUPReloadsConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rbee.toml")
	writeFile(t, path, "[log]\nlevel = 'warn'\n[queen]\ndefault_max_tokens = 3\n")
	logs := &logBuffer{}
	// The environment overrides the file's first token timeout; its
	// default max tokens the file sets.
	up, httpAddr, natsURL := upWithConfig(t, path, []string{"RBEE_QUEEN_FIRST_TOKEN_TIMEOUT=1m"}, logs)

	if n, err := completionTokens(t, httpAddr, "stories260K"); err != nil || n != 3 {
		t.Fatalf("tokens without max_tokens: %d (%v), want the file's 3", n, err)
	}
	if strings.Contains(logs.String(), `"level":"INFO"`) {
		t.Fatal("an info line at log level warn")
	}
	// Without a ctx the bundled model gets the 128 it was trained for.
	if strings.Contains(logs.String(), "longer than the model was trained for") {
		t.Error("the bundled model started with a context longer than its own")
	}
	// up's /metrics is the queen's, the hive's and the worker's.
	poll(t, 30*time.Second, func() error {
		text, err := scrape("http://" + httpAddr)
		if err != nil {
			return err
		}
		for _, re := range []string{`(?m)^rbee_queen_jobs_finished_total\{model="stories260K",result="length"\} 1$`,
			`(?m)^rbee_hive_workers_running\{model="stories260K"\} 1$`,
			`(?m)^rbee_worker_jobs_total\{model="stories260K",outcome="completed",worker_id="[^"]+-stories260K-0"\} 1$`} {
			if !regexp.MustCompile(re).MatchString(text) {
				return fmt.Errorf("up's /metrics matches no %s", re)
			}
		}
		return nil
	})

	writeFile(t, path, fmt.Sprintf("[log]\nlevel = 'info'\n[queen]\ndefault_max_tokens = 5\nfirst_token_timeout = '2m'\n"+
		"[provision]\njobs_max_per_model = 7\n[[hive.models]]\nname = 'stories260K'\n[[hive.models]]\nname = 'tiny'\npath = '%s'\n", mustAbs(t, modelPath)))
	if err := up.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), `"msg":"configuration reloaded"`) {
			return errors.New("no info line saying the configuration was reloaded")
		}
		return nil
	})
	if !strings.Contains(logs.String(), `queen.default_max_tokens: 3 -> 5`) {
		t.Errorf("the reload's diff does not name the change:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "first_token_timeout") {
		t.Error("a setting the environment overrides changed on reload")
	}
	if n, err := completionTokens(t, httpAddr, "stories260K"); err != nil || n != 5 {
		t.Errorf("tokens without max_tokens after the reload: %d (%v), want 5", n, err)
	}
	poll(t, 60*time.Second, func() error {
		n, err := completionTokens(t, httpAddr, "tiny")
		if err != nil || n != 5 {
			return fmt.Errorf("the added model: %d tokens, %v", n, err)
		}
		return nil
	})
	nc, err := nats.Connect(natsURL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	subj, _ := schemas.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, subj.JobsStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := st.CachedInfo().Config.MaxMsgsPerSubject; got != 7 {
		t.Errorf("jobs per model %d after the reload, want 7", got)
	}
	if m := reloadMetric(t, httpAddr); m != "rbee_config_last_reload_successful 1" {
		t.Errorf("metric %q after a good reload", m)
	}
	// rbee config reload asks over the bus: one answer, from up's queen.
	noKeys := []string{"RBEE_NKEYS_DIR=" + t.TempDir()}
	if out, code := rbeeRun(t, noKeys, "config", "reload", "--server", natsURL); code != 0 ||
		!regexp.MustCompile(`(?m)^queen queen-\w+: reloaded, 0 changes$`).MatchString(out) || strings.Count(out, "reloaded") != 1 {
		t.Errorf("config reload: %d\n%s", code, out)
	}

	// An invalid file: nothing changes and the metric says so.
	writeFile(t, path, "[log]\nlevel = 'debug'\n[queen]\ndefault_max_tokens = 0\n")
	if err := up.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() error {
		if m := reloadMetric(t, httpAddr); m != "rbee_config_last_reload_successful 0" {
			return fmt.Errorf("metric %q after a refused reload", m)
		}
		return nil
	})
	if !strings.Contains(logs.String(), "queen.default_max_tokens = 0: want 1 to") {
		t.Error("the log does not say why the reload was refused")
	}
	if out, code := rbeeRun(t, noKeys, "config", "reload", "--server", natsURL); code == 0 || !strings.Contains(out, "refused") {
		t.Errorf("config reload of an invalid file: %d\n%s", code, out)
	}
	if n, err := completionTokens(t, httpAddr, "tiny"); err != nil || n != 5 {
		t.Errorf("after a refused reload: %d tokens (%v), want the old config's 5 from tiny", n, err)
	}
	if strings.Contains(logs.String(), `"level":"DEBUG"`) {
		t.Error("the refused file's log level took effect")
	}
	stop(t, up, syscall.SIGTERM)
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A hive on its own takes `rbee config reload --hive ID` over the bus: an
// added model starts serving, a removed one stops, the others carry on.
func TestHiveReloadsModelsOverTheBus(t *testing.T) {
	// The server has no authentication: no identity from rbee up's
	// nkeys directory.
	t.Setenv("RBEE_NKEYS_DIR", t.TempDir())
	srv := bustest.RunServer(t)
	url := srv.ClientURL()
	path := filepath.Join(t.TempDir(), "hive.toml")
	model := mustAbs(t, modelPath)
	writeFile(t, path, fmt.Sprintf("[hive]\nthreads = 1\n[[hive.models]]\nname = 'a'\npath = '%s'\n", model))
	start(t, "queen", "--server", url, "--http", freeAddr(t))
	hiveCmd := start(t, "hive", "--config", path, "--server", url, "--id", "h-cfg", "--data-dir", t.TempDir(), "--cache-dir", t.TempDir())

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	subj, _ := schemas.NewSubjects("")
	serving := func(want ...string) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			ws, err := liveWorkers(ctx, js, subj)
			if err != nil {
				return err
			}
			var got []string
			for _, w := range ws {
				got = append(got, w.Model)
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				return fmt.Errorf("ready workers of %v, want %v", got, want)
			}
			return nil
		}
	}
	poll(t, 60*time.Second, serving("a"))
	var first string
	for _, w := range must(liveWorkers(context.Background(), js, subj)) {
		first = w.WorkerID
	}

	noKeys := []string{"RBEE_NKEYS_DIR=" + t.TempDir()}
	writeFile(t, path, fmt.Sprintf("[hive]\nthreads = 1\n[[hive.models]]\nname = 'a'\npath = '%s'\n[[hive.models]]\nname = 'b'\npath = '%[1]s'\n", model))
	out, code := rbeeRun(t, noKeys, "config", "reload", "--hive", "h-cfg", "--server", url)
	if code != 0 || !strings.Contains(out, "hive h-cfg: reloaded, 2 changes") || !strings.Contains(out, `hive.models[1].name: (none) -> "b"`) {
		t.Fatalf("config reload --hive: %d\n%s", code, out)
	}
	poll(t, 60*time.Second, serving("a", "b"))
	for _, w := range must(liveWorkers(context.Background(), js, subj)) {
		if w.Model == "a" && w.WorkerID != first {
			t.Errorf("a's worker %s was replaced by %s: a reload must leave it alone", first, w.WorkerID)
		}
	}

	writeFile(t, path, fmt.Sprintf("[hive]\nthreads = 1\n[[hive.models]]\nname = 'b'\npath = '%s'\n", model))
	if out, code := rbeeRun(t, noKeys, "config", "reload", "--hive", "h-cfg", "--server", url); code != 0 {
		t.Fatalf("config reload --hive: %d\n%s", code, out)
	}
	poll(t, 60*time.Second, serving("b"))
	stop(t, hiveCmd, syscall.SIGTERM) // and its workers with it
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Workers that read the hive's file get as environment only what the
// hive's flags set over it: a variable would hide the file from a reload.
func TestWorkerEnvCarriesOnlyFlagsOverTheFile(t *testing.T) {
	t.Setenv("RBEE_LOG_LEVEL", "")
	os.Unsetenv("RBEE_LOG_LEVEL")
	path := filepath.Join(t.TempDir(), "rbee.toml")
	writeFile(t, path, "[log]\nlevel = 'info'\n[worker]\nheartbeat_interval = '3s'\n")
	f, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Log.Level = "debug" // as --log-level debug would
	env, err := workerEnv(f, path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(env, "RBEE_LOG_LEVEL=debug") || slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "RBEE_WORKER_") }) {
		t.Errorf("env %q, want the flag's log level and none of the file's [worker]", env)
	}
	if env, _ := workerEnv(f, ""); !slices.Contains(env, "RBEE_WORKER_HEARTBEAT_INTERVAL=3s") || !slices.Contains(env, "RBEE_LOG_LEVEL=debug") {
		t.Errorf("env without a file %q, want every [worker] and [log] setting", env)
	}
}
