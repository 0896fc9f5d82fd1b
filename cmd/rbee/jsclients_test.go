package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The official JavaScript clients, openai and ollama from npm at the
// versions testdata/jsclients pins, against a real rbee up: what their
// users run is what works. node and npm are required (.ci/run installs
// them); a machine without them fails the test rather than skipping it.
func TestOfficialJSClients(t *testing.T) {
	dir := jsClients(t)
	// toolbee (tools_e2e_test.go) takes tools: the tool-call checks use it.
	up := startUp(t, "--catalog", "toolbee="+toolModel(t))
	cmd := exec.Command("node", "clients.mjs", "http://"+up.httpAddr, "stories260K", "toolbee")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	t.Logf("node clients.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("the JavaScript clients failed: %v", err)
	}
	// All of that within each part's NATS permissions.
	stop(t, up.cmd, os.Interrupt)
	if strings.Contains(up.stderr.String(), "Permissions Violation") {
		t.Errorf("the server refused one of rbee's own parts:\n%s", up.stderr.String())
	}
	passed := 0
	for line := range strings.Lines(string(out)) {
		if strings.HasPrefix(line, "ok ") {
			passed++
		}
	}
	if passed != 16 {
		t.Errorf("%d checks passed, want 16", passed)
	}
}

// jsClients installs the pinned clients once per lock file into the user
// cache and returns a directory holding them and the test script.
func jsClients(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required for the client tests (apt-get install nodejs npm): %v", tool, err)
		}
	}
	lock, err := os.ReadFile("testdata/jsclients/package-lock.json")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lock)
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(cache, "rbee", "jsclients-"+hex.EncodeToString(sum[:8]))
	for _, f := range []string{"package.json", "package-lock.json", "clients.mjs"} {
		data, err := os.ReadFile(filepath.Join("testdata/jsclients", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err != nil {
		cmd := exec.Command("npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	return dir
}
