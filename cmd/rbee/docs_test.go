package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus/bustest"
)

// docCurls are the curl commands of path's sh blocks, continuation lines
// joined, in order.
func docCurls(t *testing.T, path string) []string {
	t.Helper()
	return docCommands(t, path, "curl ")
}

// docCommands are the commands of path's sh blocks that begin with
// prefix, continuation lines joined, in order.
func docCommands(t *testing.T, path, prefix string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, block := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
		cmd := ""
		for line := range strings.SplitSeq(block[1], "\n") {
			cont := strings.HasSuffix(line, "\\")
			cmd += strings.TrimSuffix(line, "\\")
			if cont {
				continue
			}
			if c := strings.TrimSpace(cmd); strings.HasPrefix(c, prefix) {
				out = append(out, c)
			}
			cmd = ""
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no %q example", path, prefix)
	}
	return out
}

// TestAPIDocExamples runs every curl example of docs/API.md and
// docs/MONITORING.md as written against a real rbee up, only the address
// changed: each exits 0 and answers something that is not an error.
func TestAPIDocExamples(t *testing.T) {
	up := startUp(t)
	defer stop(t, up.cmd, syscall.SIGTERM)
	for _, doc := range []string{"../../docs/API.md", "../../docs/MONITORING.md"} {
		for _, c := range docCurls(t, doc) {
			c = strings.ReplaceAll(c, "http://127.0.0.1:8080", "http://"+up.httpAddr)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			out, err := exec.CommandContext(ctx, "sh", "-c", c).CombinedOutput()
			cancel()
			if err != nil || len(out) == 0 || strings.Contains(string(out), `"error":{`) {
				t.Errorf("%s: %s\n%v\n%s", doc, c, err, out)
			}
		}
	}
	// The audit commands, as written, against rbee up's server and with
	// its identities (startUp points RBEE_NKEYS_DIR at them).
	for _, c := range docCommands(t, "../../docs/MONITORING.md", "rbee ") {
		c, _, _ = strings.Cut(c, "#")
		cmd := exec.Command(rbeeBin, strings.Fields(c)[1:]...)
		cmd.Env = append(os.Environ(), "NATS_URL="+up.natsURL)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("MONITORING.md: %s\n%v\n%s", c, err, out)
		}
	}
}

// TestDeploymentExamples checks docs/DEPLOYMENT.md's configuration file
// with rbee config validate, and every ExecStart of its systemd units with
// --validate-config against that file: flags that do not exist or a file
// that does not validate fail.
func TestDeploymentExamples(t *testing.T) {
	data, err := os.ReadFile("../../docs/DEPLOYMENT.md")
	if err != nil {
		t.Fatal(err)
	}
	tomls := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(string(data), -1)
	if len(tomls) != 1 {
		t.Fatalf("%d toml blocks, want the one configuration file", len(tomls))
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "rbee.toml")
	if err := os.WriteFile(file, []byte(tomls[0][1]), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(rbeeBin, "config", "validate", file).CombinedOutput(); err != nil {
		t.Errorf("rbee config validate of DEPLOYMENT.md's file: %v\n%s", err, out)
	}
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(tomls[0][1]+"\n[queen]\nhttp = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(rbeeBin, "config", "validate", bad).CombinedOutput(); err == nil {
		t.Errorf("rbee config validate accepted a broken file:\n%s", out)
	}
	execs := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/rbee (.*)$`).FindAllStringSubmatch(string(data), -1)
	if len(execs) != 2 {
		t.Fatalf("%d ExecStart lines, want the queen's and the hive's", len(execs))
	}
	for _, e := range execs {
		line := strings.NewReplacer("/etc/rbee/rbee.toml", file, "%d", dir).Replace(e[1])
		args := append(strings.Fields(line), "--validate-config")
		if out, err := exec.Command(rbeeBin, args...).CombinedOutput(); err != nil {
			t.Errorf("rbee %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestDeploymentBackupRestore runs DEPLOYMENT.md's nats CLI backup lines
// as the operator against rbee up, after some jobs left audit events, and
// its restore lines into an empty server, which then holds the audit
// trail that rbee audit verify accepts.
func TestDeploymentBackupRestore(t *testing.T) {
	natsBin := natsCLI(t)
	up := startUp(t)
	defer stop(t, up.cmd, syscall.SIGTERM)
	if out, err := exec.Command("curl", "-sf", "http://"+up.httpAddr+"/v1/completions", "-d",
		`{"model":"stories260K","prompt":"Once upon a time","max_tokens":4}`).CombinedOutput(); err != nil {
		t.Fatalf("a job for the audit trail: %v\n%s", err, out)
	}
	dir := t.TempDir()
	run := func(c string, args ...string) {
		t.Helper()
		c = strings.ReplaceAll(c, "/backup/rbee", dir)
		fields := strings.Fields(c)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, natsBin, append(args, fields[1:]...)...)
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "NATS_URL=") || strings.HasPrefix(kv, "NATS_CONTEXT=")
		})
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("DEPLOYMENT.md: %s: %v\n%s", c, err, out)
		}
	}
	var restores []string
	for _, c := range docCommands(t, "../../docs/DEPLOYMENT.md", "nats ") {
		if strings.HasPrefix(c, "nats backup restore ") {
			restores = append(restores, c)
			continue
		}
		run(c, "--context", "rbee-operator")
	}
	if len(restores) != 2 {
		t.Fatalf("%d restore lines, want 2", len(restores))
	}
	fresh := bustest.RunServer(t)
	for _, c := range restores {
		run(c, "--server", fresh.ClientURL())
	}
	_, js := bustest.Connect(t, fresh)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "RBEE_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n == 0 {
		t.Fatal("the restored audit stream is empty")
	}
	// The fresh server has no identities: no seeds to present.
	verify := exec.Command(rbeeBin, "audit", "verify", "--server", fresh.ClientURL())
	verify.Env = append(os.Environ(), "RBEE_NKEYS_DIR="+t.TempDir())
	if out, err := verify.CombinedOutput(); err != nil {
		t.Errorf("rbee audit verify of the restored trail: %v\n%s", err, out)
	}
}
