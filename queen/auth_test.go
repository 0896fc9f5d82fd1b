package queen

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/schemas"
)

// syncBuffer collects log lines written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// keyed is a queen with API keys, and the keys it was given.
type keyed struct {
	*fixture
	dir  string
	keys map[string]string // name to secret
	logs *syncBuffer
}

// newKeyedFixture is newFixture with a key file for each of files, its
// logs kept to search.
func newKeyedFixture(t *testing.T, files map[string]apikey.File, mod func(*Config)) *keyed {
	t.Helper()
	dir := t.TempDir()
	keys := map[string]string{}
	for name, f := range files {
		f.Name = name
		secret, err := apikey.WriteNew(filepath.Join(dir, name+".json"), f)
		if err != nil {
			t.Fatal(err)
		}
		keys[name] = secret
	}
	set, err := apikey.Load([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	s, nc, js, subj := bustest.Provisioned(t)
	cfg := Config{HTTPAddr: "127.0.0.1:0", Subjects: subj, Keys: set}
	if mod != nil {
		mod(&cfg)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(io.MultiWriter(t.Output(), logs), &slog.HandlerOptions{Level: slog.LevelDebug}))
	q, err := New(nc, cfg, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(q.Handler())
	t.Cleanup(func() {
		hs.Close()
		q.Close()
	})
	return &keyed{fixture: &fixture{t: t, srv: s, nc: nc, js: js, subj: subj, q: q, http: hs}, dir: dir, keys: keys, logs: logs}
}

// send makes a request with the given headers and returns the status, the
// response and the error code, if any.
func (k *keyed) send(method, path, body string, header map[string]string) (*http.Response, string) {
	k.t.Helper()
	req, err := http.NewRequestWithContext(k.ctx(), method, k.http.URL+path, strings.NewReader(body))
	if err != nil {
		k.t.Fatal(err)
	}
	for h, v := range header {
		req.Header.Set(h, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.Header.Get("Content-Type") != "application/json" {
		return resp, ""
	}
	code, _ := errorCode(decodeObject(k.t, string(data))).(string)
	return resp, code
}

// scrapeWith returns the /metrics text, read with key.
func (k *keyed) scrapeWith(key string) string {
	k.t.Helper()
	req, err := http.NewRequestWithContext(k.ctx(), http.MethodGet, k.http.URL+"/metrics", nil)
	if err != nil {
		k.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		k.t.Fatalf("GET /metrics: %d %s", resp.StatusCode, data)
	}
	return string(data)
}

func bearer(key string) map[string]string { return map[string]string{"Authorization": "Bearer " + key} }

const chatBody = `{"model":"stories260K","messages":[{"role":"user","content":"Once"}],"max_tokens":4}`

func TestAPIKeysRefuseEachAttack(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{
		"alice":   {},
		"other":   {Models: []string{"llama3"}},
		"expired": {Expires: time.Now().Add(-time.Minute)},
	}, nil)
	taken := k.startWorker(model, say("Once"))
	alice := k.keys["alice"]

	for _, tc := range []struct {
		name   string
		header map[string]string
		status int
		code   schemas.Code
	}{
		{"no key", nil, 401, schemas.CodeInvalidAPIKey},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, 401, schemas.CodeInvalidAPIKey},
		{"wrong key", bearer(apikey.Generate()), 401, schemas.CodeInvalidAPIKey},
		{"different case", bearer(strings.ToUpper(alice)), 401, schemas.CodeInvalidAPIKey},
		{"stray whitespace before", bearer(" " + alice), 401, schemas.CodeInvalidAPIKey},
		{"stray whitespace inside", bearer(alice[:8] + " " + alice[8:]), 401, schemas.CodeInvalidAPIKey},
		{"truncated", bearer(alice[:len(alice)-1]), 401, schemas.CodeInvalidAPIKey},
		{"another scheme", map[string]string{"Authorization": "Basic " + alice}, 401, schemas.CodeInvalidAPIKey},
		{"expired key", bearer(k.keys["expired"]), 401, schemas.CodeInvalidAPIKey},
		{"model outside the scope", bearer(k.keys["other"]), 403, schemas.CodeForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, code := k.send("POST", "/v1/chat/completions", chatBody, tc.header)
			if resp.StatusCode != tc.status || code != string(tc.code) {
				t.Errorf("status %d code %q, want %d %s", resp.StatusCode, code, tc.status, tc.code)
			}
			if got := resp.Header.Get("WWW-Authenticate"); tc.status == 401 && !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate %q, want a Bearer challenge", got)
			}
		})
	}

	// The right key works, as Bearer (any case of the scheme) and as
	// X-Api-Key, and its name travels on the job.
	for _, h := range []map[string]string{bearer(alice), {"Authorization": "bearer " + alice}, {"X-Api-Key": alice}} {
		resp, code := k.send("POST", "/v1/chat/completions", chatBody, h)
		if resp.StatusCode != 200 {
			t.Fatalf("with the right key (%v): status %d %s", h, resp.StatusCode, code)
		}
		if j := recvJob(t, taken); j.Job.Principal != "alice" {
			t.Errorf("job principal %q, want alice", j.Job.Principal)
		}
	}

	wantMetric(t, k.scrapeWith(alice), `rbee_queen_requests_total{code="401",endpoint="POST /v1/chat/completions"} 9`)
	wantMetric(t, k.scrapeWith(alice), `rbee_queen_requests_total{code="403",endpoint="POST /v1/chat/completions"} 1`)

	logs := k.logs.String()
	for name, secret := range k.keys {
		if strings.Contains(logs, secret) || strings.Contains(strings.ToLower(logs), strings.ToLower(secret[len(apikey.Prefix):])) {
			t.Errorf("the logs hold %s's key", name)
		}
	}
	if !strings.Contains(logs, "key_fingerprint="+apikey.Fingerprint(alice)) || !strings.Contains(logs, "principal=alice") {
		t.Errorf("the logs lack alice's fingerprint %s and name", apikey.Fingerprint(alice))
	}
}

func TestAPIKeyRate(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{"slow": {Rate: "1/m"}, "fast": {}}, nil)
	k.startWorker(model, say("Once"))
	if resp, code := k.send("POST", "/v1/chat/completions", chatBody, bearer(k.keys["slow"])); resp.StatusCode != 200 {
		t.Fatalf("first request: %d %s", resp.StatusCode, code)
	}
	resp, code := k.send("POST", "/v1/chat/completions", chatBody, bearer(k.keys["slow"]))
	if resp.StatusCode != 429 || code != string(schemas.CodeRateLimited) {
		t.Fatalf("past the rate: %d %s, want 429 %s", resp.StatusCode, code, schemas.CodeRateLimited)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Errorf("Retry-After %q, want seconds to wait", ra)
	}
	// The rate is the key's: another key is not held back.
	if resp, code := k.send("POST", "/v1/chat/completions", chatBody, bearer(k.keys["fast"])); resp.StatusCode != 200 {
		t.Errorf("another key: %d %s", resp.StatusCode, code)
	}
}

func TestAPIKeyOpenRoutesAndModels(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{"alice": {}, "llama": {Models: []string{"llama3"}}}, nil)
	k.putWorker("w1", model, schemas.WorkerReady)
	k.putWorker("w2", "llama3", schemas.WorkerReady)
	for _, path := range []string{"/healthz", "/readyz"} {
		if resp, code := k.send("GET", path, "", nil); resp.StatusCode != 200 {
			t.Errorf("GET %s without a key: %d %s", path, resp.StatusCode, code)
		}
	}
	for _, path := range []string{"/metrics", "/v1/models", "/v1/jobs/abc", "/v1/embeddings"} {
		if resp, _ := k.send("GET", path, "", nil); resp.StatusCode != 401 {
			t.Errorf("GET %s without a key: %d, want 401", path, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", k.http.URL+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+k.keys["alice"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /metrics with a key: %d", resp.StatusCode)
	}

	// Each key lists the models it may use.
	for name, want := range map[string]string{"alice": "llama3,stories260K", "llama": "llama3"} {
		c := openai.NewClient(option.WithBaseURL(k.http.URL+"/v1/"), option.WithAPIKey(k.keys[name]), option.WithMaxRetries(0))
		page, err := c.Models.List(k.ctx())
		if err != nil {
			t.Fatalf("models with %s's key: %v", name, err)
		}
		var ids []string
		for _, m := range page.Data {
			ids = append(ids, m.ID)
		}
		if got := strings.Join(ids, ","); got != want {
			t.Errorf("%s sees models %s, want %s", name, got, want)
		}
	}

	open := newKeyedFixture(t, map[string]apikey.File{"alice": {}}, func(c *Config) { c.MetricsOpen = true })
	if resp, _ := open.send("GET", "/metrics", "", nil); resp.StatusCode != 200 {
		t.Errorf("GET /metrics with MetricsOpen: %d", resp.StatusCode)
	}
}

func TestAPIKeyWithOpenAIClient(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{"alice": {}}, nil)
	k.startWorker(model, say("Once", " upon"))
	params := openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	client := func(key string) openai.Client {
		return openai.NewClient(option.WithBaseURL(k.http.URL+"/v1/"), option.WithAPIKey(key), option.WithMaxRetries(0))
	}
	withKey, withoutKey := client(k.keys["alice"]), client("")
	comp, err := withKey.Chat.Completions.New(k.ctx(), params)
	if err != nil || comp.Choices[0].Message.Content != "Once upon" {
		t.Fatalf("with the key: %v, %+v", err, comp)
	}
	_, err = withoutKey.Chat.Completions.New(k.ctx(), params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || apiErr.Code != string(schemas.CodeInvalidAPIKey) {
		t.Fatalf("without a key: %v, want 401 %s", err, schemas.CodeInvalidAPIKey)
	}
}

func TestAPIKeyRevokedOnReload(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{"alice": {}, "bob": {}}, nil)
	k.startWorker(model, say("Once"))
	if resp, code := k.send("POST", "/v1/chat/completions", chatBody, bearer(k.keys["bob"])); resp.StatusCode != 200 {
		t.Fatalf("bob before: %d %s", resp.StatusCode, code)
	}
	if err := os.Remove(filepath.Join(k.dir, "bob.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := k.q.cfg.Keys.Reload(); err != nil {
		t.Fatal(err)
	}
	if resp, _ := k.send("POST", "/v1/chat/completions", chatBody, bearer(k.keys["bob"])); resp.StatusCode != 401 {
		t.Errorf("bob after revocation: %d, want 401", resp.StatusCode)
	}
	if resp, code := k.send("POST", "/v1/chat/completions", chatBody, bearer(k.keys["alice"])); resp.StatusCode != 200 {
		t.Errorf("alice after bob's revocation: %d %s", resp.StatusCode, code)
	}
}

func TestNoKeysOffLoopbackRefused(t *testing.T) {
	_, nc, _, subj := bustest.Provisioned(t)
	for addr, ok := range map[string]bool{
		"127.0.0.1:0": true, "[::1]:0": true, "localhost:0": true,
		"0.0.0.0:8080": false, ":8080": false, "192.0.2.1:8080": false, "[::]:8080": false,
	} {
		q, err := New(nc, Config{HTTPAddr: addr, Subjects: subj}, nil, nil)
		if q != nil {
			q.Close()
		}
		if ok != (err == nil) {
			t.Errorf("%s without keys: %v", addr, err)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "--allow-no-auth")) {
			t.Errorf("%s: error %v does not say how to allow it", addr, err)
		}
		if !ok {
			q, err := New(nc, Config{HTTPAddr: addr, Subjects: subj, AllowNoAuth: true}, nil, nil)
			if err != nil {
				t.Errorf("%s with AllowNoAuth: %v", addr, err)
			} else {
				q.Close()
			}
		}
	}
}

// No client claims a principal: the NATS infer endpoint refuses the field
// and the HTTP API takes it for an unknown one.
func TestPrincipalNotTakenFromClients(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{"alice": {}}, nil)
	k.run()
	k.putWorker("w1", model, schemas.WorkerReady)
	msgs := k.infer(`{"model":"stories260K","prompt":"x","principal":"admin"}`)
	if len(msgs) != 1 || msgs[0].Header.Get(micro.ErrorCodeHeader) != string(schemas.CodeInvalidRequest) {
		t.Errorf("infer with a principal: %d messages, want one invalid_request error", len(msgs))
	}
	resp, code := k.send("POST", "/v1/completions", completionWith(`,"principal":"admin"`), bearer(k.keys["alice"]))
	if resp.StatusCode != 400 || code != string(schemas.CodeInvalidRequest) {
		t.Errorf("HTTP with a principal: %d %s, want 400 invalid_request", resp.StatusCode, code)
	}
}
