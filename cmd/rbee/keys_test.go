package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/internal/config"
)

// newKey runs `rbee keys new` and returns the key it printed.
func newKey(t *testing.T, dir, name string, extra ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(rbeeBin, append([]string{"keys", "new", name, "--dir", dir}, extra...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("keys new %s: %v\n%s", name, err, stderr.String())
	}
	key := strings.TrimSpace(stdout.String())
	if !strings.HasPrefix(key, apikey.Prefix) || strings.Contains(key, "\n") {
		t.Fatalf("keys new printed %q, want one key", stdout.String())
	}
	path := filepath.Join(dir, name+".json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %04o, want 0600", path, fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if strings.Contains(string(data), key) {
		t.Errorf("%s holds the key itself", path)
	}
	if !strings.Contains(stderr.String(), apikey.Fingerprint(key)) || strings.Contains(stderr.String(), key) {
		t.Errorf("keys new's message %q: want the fingerprint and not the key", stderr.String())
	}
	return key
}

// tryGet sends GET url with key (none when empty) and returns the status.
func tryGet(url, key string) (int, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func get(t *testing.T, url, key string) int {
	t.Helper()
	code, err := tryGet(url, key)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return code
}

// logBuffer keeps a process's stderr while passing it on.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	os.Stderr.Write(p)
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A revoked key stops working after SIGHUP, without a restart; a broken
// key file on SIGHUP keeps the keys in force and the log says why; SIGHUP
// never ends the queen.
func TestQueenReloadsKeysOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	alice, bob := newKey(t, dir, "alice"), newKey(t, dir, "bob", "--models", "stories260K", "--rate", "100/s")
	srv := bustest.RunServer(t)
	httpAddr := freeAddr(t)
	logs := &logBuffer{}
	cmd := exec.Command(rbeeBin, "queen", "--server", srv.ClientURL(), "--http", httpAddr, "--api-keys", dir, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = os.Stderr, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	models := "http://" + httpAddr + "/v1/models"
	poll(t, 30*time.Second, func() error {
		if code, err := tryGet("http://"+httpAddr+"/readyz", ""); code != 200 {
			return fmt.Errorf("readyz %d %v", code, err)
		}
		return nil
	})
	for key, want := range map[string]int{alice: 200, bob: 200, "": 401, strings.ToUpper(alice): 401} {
		if code := get(t, models, key); code != want {
			t.Errorf("before: GET /v1/models with %q: %d, want %d", apikey.Fingerprint(key), code, want)
		}
	}

	if err := os.Remove(filepath.Join(dir, "bob.json")); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() error {
		if code := get(t, models, bob); code != 401 {
			return fmt.Errorf("bob's revoked key: %d, want 401", code)
		}
		return nil
	})
	if code := get(t, models, alice); code != 200 {
		t.Errorf("alice after bob's revocation: %d", code)
	}

	// A broken file: the keys stay as they were, and the log says which file.
	if err := os.WriteFile(filepath.Join(dir, "carol.json"), []byte(`{"name":"carol"`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() error {
		if !strings.Contains(logs.String(), "carol.json") {
			return fmt.Errorf("the log does not name the broken file")
		}
		return nil
	})
	if code := get(t, models, alice); code != 200 {
		t.Errorf("alice after a failed reload: %d", code)
	}
	if strings.Contains(logs.String(), alice) || strings.Contains(logs.String(), bob) {
		t.Error("the queen's log holds a key")
	}
	stop(t, cmd, syscall.SIGTERM)
}

// Start-up is refused for a key file others may read, and for a
// non-loopback address without keys, before anything connects.
func TestQueenStartUpRefusals(t *testing.T) {
	dir := t.TempDir()
	newKey(t, dir, "alice")
	open := filepath.Join(dir, "alice.json")
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"queen", "--server", "nats://127.0.0.1:1", "--api-keys", open}, "chmod 600 " + open},
		{[]string{"queen", "--server", "nats://127.0.0.1:1", "--api-keys", dir}, "chmod 600 " + open},
		{[]string{"up", "--nats-port", "-1", "--data-dir", t.TempDir(), "--api-keys", dir}, "chmod 600 " + open},
		{[]string{"queen", "--server", "nats://127.0.0.1:1", "--http", "0.0.0.0:0"}, "--allow-no-auth"},
		{[]string{"up", "--nats-port", "-1", "--data-dir", t.TempDir(), "--http", "0.0.0.0:0"}, "--allow-no-auth"},
	} {
		out, err := exec.Command(rbeeBin, tc.args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("rbee %s: %v\n%s\nwant a refusal saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}

// rbee up with keys: a real completion with the key, 401 without, and a
// key revoked by SIGHUP refused while up goes on serving.
func TestUpWithKeys(t *testing.T) {
	dir := t.TempDir()
	alice, bob := newKey(t, dir, "alice"), newKey(t, dir, "bob")
	up := startUp(t, "--api-keys", dir)
	complete := func(key string) (int, string) {
		body, _ := json.Marshal(map[string]any{"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
		req, _ := http.NewRequest(http.MethodPost, "http://"+up.httpAddr+"/v1/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&out)
		if len(out.Choices) == 1 {
			return resp.StatusCode, out.Choices[0].Text
		}
		return resp.StatusCode, out.Error.Code
	}
	if code, text := complete(alice); code != 200 || text == "" {
		t.Fatalf("with alice's key: %d %q", code, text)
	}
	if code, errCode := complete(""); code != 401 || errCode != "invalid_api_key" {
		t.Errorf("without a key: %d %s, want 401 invalid_api_key", code, errCode)
	}
	if code, _ := complete(bob); code != 200 {
		t.Errorf("bob before revocation: %d", code)
	}

	// The client commands send a key from --api-key-file or RBEE_API_KEY.
	keyFile := filepath.Join(t.TempDir(), "alice.key")
	if err := os.WriteFile(keyFile, []byte(alice+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	queenURL := "http://" + up.httpAddr
	client := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(rbeeBin, args...)
		cmd.Env = append(os.Environ(), env...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		return out.String() + errOut.String(), err
	}
	if out, err := client(nil, "run", "--queen", queenURL, "--api-key-file", keyFile, "--temperature", "0", "--max-tokens", "8", "Once upon a time"); err != nil || strings.TrimSpace(out) == "" {
		t.Errorf("rbee run with --api-key-file: %v\n%s", err, out)
	}
	if out, err := client([]string{"RBEE_API_KEY=" + alice}, "models", "--queen", queenURL); err != nil || !strings.Contains(out, "stories260K") {
		t.Errorf("rbee models with RBEE_API_KEY: %v\n%s", err, out)
	}
	if out, err := client([]string{"RBEE_API_KEY="}, "run", "--queen", queenURL, "Once"); err == nil || !strings.Contains(out, "invalid_api_key") {
		t.Errorf("rbee run without a key: %v\n%s; want a refusal with invalid_api_key", err, out)
	}
	if err := os.Remove(filepath.Join(dir, "bob.json")); err != nil {
		t.Fatal(err)
	}
	if err := up.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() error {
		if code, _ := complete(bob); code != 401 {
			return fmt.Errorf("bob's revoked key: %d, want 401", code)
		}
		return nil
	})
	if code, text := complete(alice); code != 200 || text == "" {
		t.Errorf("alice after SIGHUP: %d %q", code, text)
	}
	stop(t, up.cmd, syscall.SIGTERM)
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 30, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"2027-01-31":           time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC),
		"2027-01-31T12:00:00Z": time.Date(2027, 1, 31, 12, 0, 0, 0, time.UTC),
		"90d":                  now.AddDate(0, 0, 90),
		"36h":                  now.Add(36 * time.Hour),
	} {
		if got, err := parseExpiry(in, now); err != nil || !got.Equal(want) {
			t.Errorf("parseExpiry(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "soon", "-1h", "0d", "d", "2027-13-01"} {
		if _, err := parseExpiry(bad, now); err == nil {
			t.Errorf("parseExpiry(%q) accepted", bad)
		}
	}
}

// keys new refuses what a key file could not hold, and never replaces a file.
func TestKeysNewRefuses(t *testing.T) {
	dir := t.TempDir()
	newKey(t, dir, "alice")
	for _, args := range [][]string{
		{"keys", "new", "alice", "--dir", dir},
		{"keys", "new", "bad name", "--dir", dir},
		{"keys", "new", "bob", "--dir", dir, "--rate", "fast"},
		{"keys", "new", "bob", "--dir", dir, "--expires", "someday"},
		{"keys", "new", "--dir", dir},
		{"keys", "new", "a", "b", "--dir", dir},
	} {
		out, err := exec.Command(rbeeBin, args...).CombinedOutput()
		if err == nil {
			t.Errorf("rbee %s succeeded:\n%s", strings.Join(args, " "), out)
		}
		if strings.Contains(string(out), apikey.Prefix) {
			t.Errorf("rbee %s printed a key:\n%s", strings.Join(args, " "), out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "bob.json")); err == nil {
		t.Error("a refused keys new left bob.json")
	}
}

func TestAPIKeysFlagReplacesEnv(t *testing.T) {
	t.Setenv("RBEE_API_KEYS", "/env/a"+string(os.PathListSeparator)+"/env/b")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "/env/a,/env/b"},
		{[]string{"--api-keys", "/flag/a", "--api-keys", "/flag/b"}, "/flag/a,/flag/b"},
	} {
		f, err := config.Load("")
		if err != nil {
			t.Fatal(err)
		}
		fs := newFlags("test", io.Discard)
		bindAuthFlags(fs, &f)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(f.Queen.APIKeys, ","); got != tc.want {
			t.Errorf("%v: paths %s, want %s", tc.args, got, tc.want)
		}
	}
}
