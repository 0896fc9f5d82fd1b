package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/schemas"
)

// docScript is every command of path's sh blocks in order: continuation
// lines and quoted arguments across lines joined, a here-document kept
// whole with its body, comment-only lines dropped.
func docScript(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	heredoc := regexp.MustCompile(`<<'?([A-Z]+)'?`)
	var out []string
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
		cmd, until := "", ""
		for line := range strings.SplitSeq(block[1], "\n") {
			if until != "" {
				cmd += "\n" + line
				if line == until {
					out, cmd, until = append(out, cmd), "", ""
				}
				continue
			}
			cont := strings.HasSuffix(line, "\\")
			cmd += strings.TrimSuffix(line, "\\")
			if cont {
				continue
			}
			// A single-quoted argument (a JSON body) may span lines.
			if openQuote(cmd) {
				cmd += "\n"
				continue
			}
			if m := heredoc.FindStringSubmatch(cmd); m != nil {
				until = m[1]
				continue
			}
			if c := strings.TrimSpace(cmd); c != "" && !strings.HasPrefix(c, "#") {
				out = append(out, c)
			}
			cmd = ""
		}
	}
	return out
}

// openQuote says whether s ends inside a single-quoted string, as sh reads
// it: a # that starts a word outside quotes begins a comment.
func openQuote(s string) bool {
	quoted := false
	for i, r := range s {
		switch {
		case r == '\'':
			quoted = !quoted
		case r == '#' && !quoted && (i == 0 || s[i-1] == ' ' || s[i-1] == '\t' || s[i-1] == '\n'):
			return false
		}
	}
	return quoted
}

// docRunners are the tests that run a document's commands beginning with a
// prefix as written (only addresses, placeholders and output paths
// changed).
var docRunners = []struct{ doc, prefix, test string }{
	{"README.md", "curl ", "TestReadmeExamples"},
	{"README.md", "bin/rbee ", "TestReadmeExamples"},
	{"README.md", "cat > rbee.toml", "TestReadmeExamples"},
	{"docs/SECRETS.md", "rbee keys new ", "TestReadmeExamples"},
	{"docs/API.md", "curl ", "TestAPIDocExamples"},
	{"docs/MONITORING.md", "curl ", "TestAPIDocExamples"},
	{"docs/MONITORING.md", "rbee audit ", "TestAPIDocExamples"},
	{"docs/DEPLOYMENT.md", "nats backup ", "TestDeploymentBackupRestore"},
	{"docs/DEPLOYMENT.md", "rbee config validate ", "TestDeploymentExamples (the same file, at the test's path)"},
	{"docs/DEPLOYMENT.md", "rbee pull ", "TestPullDocExample"},
}

// docNotRunAsWritten are the documented commands no test runs verbatim,
// each with what covers it instead. A command added to the docs must land
// in a runner or here, with a reason.
var docNotRunAsWritten = map[string]string{
	"make run":      "builds bin/rbee and runs rbee up: every test here starts that binary's rbee up",
	"make test":     "the command that runs these tests (.ci/run)",
	"make bench":    "benchmarks, not tests: make bench runs them",
	"make bench-go": "benchmarks, not tests",
	"make fuzz":     "exploration, run before resolving; make test replays its corpora",
	"make build":    "the build every test here starts from (TestMain builds the same package)",
	"nats --context rbee req rbee.v2.infer '{\"model\":\"stories260K\",\"prompt\":\"Once upon a time\",\"max_tokens\":32}' --wait-for-empty": "TestReadmeNatsExamples runs it",
	"nats --context rbee-operator sub 'rbee.v2.stream.demo.>' &":                                                                             "TestReadmeNatsExamples runs it, in the background",
	"nats --context rbee-operator pub rbee.v2.jobs.stories260K":                                                                              "TestReadmeNatsExamples runs it",
	"nats --context rbee-operator kv put RBEE_CANCELS":                                                                                       "TestReadmeNatsExamples runs it",
	"nats --context rbee-operator micro ls":                                                                                                  "TestReadmeNatsExamples runs it",
	"nats --context rbee-operator stream info RBEE_JOBS":                                                                                     "TestReadmeNatsExamples runs it",
	"nats --context rbee-operator stream subjects RBEE_STREAMS":                                                                              "TestReadmeNatsExamples runs it",
	"nats --context rbee-operator kv ls RBEE_WORKERS":                                                                                        "TestReadmeNatsExamples runs it",
	"nats --context rbee-operator sub 'rbee.v2.heartbeat.>'":                                                                                 "TestReadmeNatsExamples runs it",
	"nats --context rbee-operator stream view RBEE_EVENTS":                                                                                   "pages interactively, so it needs a terminal: rbee audit tail (TestAPIDocExamples) reads the same stream",
	"nats --context rbee-operator req rbee.v2.control.hive.HIVE_ID.":                                                                         "TestControlCommands sends each of these requests (rbee worker spawn, worker stop, shutdown) and list with the nats CLI",
	"nats --context rbee req rbee.v2.infer":                                                                                                  "the README's request with fewer tokens: TestReadmeNatsExamples",
	"nats --context rbee-operator stream ls":                                                                                                 "TestReadmeNatsExamples lists streams with the operator context",
	"bin/rbee up --config rbee.toml":                                                                                                         "runs until stopped: TestSIGHUPReloadsConfig starts rbee up --config and reloads it",
	"bin/rbee up --http 0.0.0.0:8080 --api-keys":                                                                                             "binds 8080 on every address: TestUpWithKeys starts rbee up --api-keys on a free port",
	"RBEE_API_KEY=rbee_... bin/rbee run --queen":                                                                                             "a placeholder key: TestUpWithKeys runs rbee run --queen with a real one",
	"kill -HUP <pid of rbee up>":                                                                                                             "TestSIGHUPReloadsConfig and TestQueenReloadsKeysOnSIGHUP send the signal",
	"rbee queen --server nats://nats-1:4222":                                                                                                 "a cluster's machines: TestDeploymentExamples validates the same flags in the systemd units",
	"rbee hive  --server nats://nats-1:4222":                                                                                                 "a cluster's machines: TestDeploymentExamples validates the same flags in the systemd units",
	"rbee queen --api-keys ~/.config/rbee/keys":                                                                                              "runs until stopped: TestQueenReloadsKeysOnSIGHUP starts rbee queen --api-keys",
	"curl -s http://127.0.0.1:8080/v1/models -H \"Authorization: Bearer $RBEE_API_KEY\"":                                                     "TestUpWithKeys asks with a key in the header",
	"rbee nats-config --nkeys-dir /etc/rbee/nkeys > /etc/nats/rbee-auth.conf":                                                                "writes under /etc: TestNATSConfigForAnExternalServer runs rbee nats-config and serves its output",
	"sudo install -m 0755 bin/rbee /usr/local/bin/rbee":                                                                                      "installs system-wide",
	"sudo systemctl daemon-reload":                                                                                                           "systemd on the target machine",
	"sudo systemctl enable --now rbee-queen":                                                                                                 "systemd on the target machine; TestDeploymentExamples checks the unit's command",
	"sudo systemctl enable --now rbee-hive":                                                                                                  "systemd on the target machine; TestDeploymentExamples checks the unit's command",
	"rbee --version":                                                                                                                         "TestHelpAndVersion",
	"curl -s http://queen-1:8080/readyz":                                                                                                     "a deployed queen's address: TestAPIDocExamples asks the same /readyz",
	"nats backup restore ":                                                                                                                   "TestDeploymentBackupRestore restores into an empty server",
}

// Every command the README and the docs show is run as written by a test,
// or says here which test covers it instead and why not verbatim.
func TestEveryDocExampleIsRun(t *testing.T) {
	docs, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range append([]string{"../../README.md"}, docs...) {
		doc := strings.TrimPrefix(path, "../../")
		for _, c := range docScript(t, path) {
			if runnerOf(doc, c) == "" && notRunReason(c) == "" {
				t.Errorf("%s: %q is run by no test: run it in one (docRunners) or say in docNotRunAsWritten what covers it", doc, c)
			}
		}
	}
}

func runnerOf(doc, c string) string {
	for _, r := range docRunners {
		if r.doc == doc && strings.HasPrefix(c, r.prefix) {
			return r.test
		}
	}
	return ""
}

func notRunReason(c string) string {
	for prefix, reason := range docNotRunAsWritten {
		if strings.HasPrefix(c, prefix) {
			return reason
		}
	}
	return ""
}

// TestReadmeExamples runs the README's curl and bin/rbee commands as
// written against a real rbee up, in the README's order, from a directory
// laid out like the repository: only the address and the placeholders
// (JOB_ID, HIVE_ID, WORKER_ID, MODEL) change. SECRETS.md's rbee keys
// lines run too.
func TestReadmeExamples(t *testing.T) {
	up := startUp(t)
	defer stop(t, up.cmd, syscall.SIGTERM)
	dir := t.TempDir()
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(repo, "infer"), filepath.Join(dir, "infer")); err != nil {
		t.Fatal(err)
	}
	placeholders := map[string]string{"MODEL": "stories260K"}
	run := func(doc, c string) string {
		t.Helper()
		script := strings.ReplaceAll(c, "http://127.0.0.1:8080", "http://"+up.httpAddr)
		script = regexp.MustCompile(`(^|\s)(bin/)?rbee `).ReplaceAllString(script, "${1}"+rbeeBin+" ")
		for name, v := range placeholders {
			script = regexp.MustCompile(`\b`+name+`\b`).ReplaceAllString(script, v)
		}
		// A generated model goes to the test's directory, not /tmp.
		script = strings.ReplaceAll(script, "-o /tmp/", "-o "+dir+"/")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", script)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "NATS_URL="+up.natsURL)
		began := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %s\n%v\n%s", doc, c, err, out)
		}
		t.Logf("%s (%v): %.200s", c, time.Since(began).Round(time.Millisecond), out)
		return string(out)
	}

	var shutdown string
	for _, c := range docScript(t, "../../README.md") {
		if runnerOf("README.md", c) != "TestReadmeExamples" || notRunReason(c) != "" {
			continue
		}
		switch {
		case strings.HasPrefix(c, "bin/rbee shutdown"):
			shutdown = c // last: it stops the hive the other commands use
			continue
		case strings.Contains(c, "JOB_ID") && placeholders["JOB_ID"] == "":
			resp := postJSON(t, "http://"+up.httpAddr+"/v1/completions", map[string]any{
				"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 4,
			})
			resp.Body.Close()
			if placeholders["JOB_ID"] = resp.Header.Get("X-Rbee-Job-Id"); resp.StatusCode != 200 || placeholders["JOB_ID"] == "" {
				t.Fatalf("a job for JOB_ID: status %d, job %q", resp.StatusCode, placeholders["JOB_ID"])
			}
		case strings.Contains(c, "HIVE_ID") && placeholders["HIVE_ID"] == "":
			hs, err := rbeeJSON[[]schemas.HiveHeartbeat](t, "hives", "ls", "--server", up.natsURL)
			if err != nil || len(hs) != 1 {
				t.Fatalf("hives for HIVE_ID: %+v %v", hs, err)
			}
			placeholders["HIVE_ID"] = hs[0].HiveID
		}
		out := run("README.md", c)
		if strings.HasPrefix(c, "curl ") {
			// The tool call example names a model this machine does not
			// have: it gets a clear error, not a hang or a cut connection.
			if strings.Contains(c, `"qwen2.5-0.5b"`) {
				if !strings.Contains(out, `"code":"`) {
					t.Errorf("README.md: %s: want a coded error for a model nobody serves, got %s", c, out)
				}
			} else if out == "" || strings.Contains(out, `"error":{`) {
				t.Errorf("README.md: %s\n%s", c, out)
			}
		}
		if m := regexp.MustCompile(`starts worker (\S+)`).FindStringSubmatch(out); m != nil {
			placeholders["WORKER_ID"] = m[1]
		}
	}
	if placeholders["WORKER_ID"] == "" {
		t.Error("bin/rbee worker spawn named no worker for WORKER_ID")
	}
	if shutdown == "" {
		t.Fatal("the README has no bin/rbee shutdown")
	}
	if out := run("README.md", shutdown); !strings.Contains(out, "shutting down") {
		t.Errorf("README.md: %s: %s", shutdown, out)
	}

	// SECRETS.md's keys, in a configuration directory of their own so that
	// the README's alice does not collide with its.
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, c := range docScript(t, "../../docs/SECRETS.md") {
		if runnerOf("docs/SECRETS.md", c) == "TestReadmeExamples" {
			if out := run("docs/SECRETS.md", c); !strings.Contains(out, "rbee_") {
				t.Errorf("docs/SECRETS.md: %s printed no key: %s", c, out)
			}
		}
	}
}
