package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus"
)

// Every bad configuration is refused with a problem naming its field, its
// value and what is allowed.
func TestValidateRejectsBadConfigs(t *testing.T) {
	cases := []struct {
		name, toml, want string
	}{
		{"log level", "[log]\nlevel = 'loud'", `log.level = "loud": want debug, info, warn or error`},
		{"prefix", "[nats]\nprefix = 'a b'", `nats.prefix = "a b": want tokens`},
		{"nats url scheme", "[nats]\nurl = 'http://x:4222'", `nats.url = "http://x:4222": want nats://`},
		{"tls key without cert", "[nats]\ntls_key = 'k.pem'", `nats.tls_key = "k.pem": want set together with nats.tls_cert`},
		{"password without user", "[nats]\npassword = 's3cret'", `nats.user = "": want set with nats.password`},
		{"queen http", "[queen]\nhttp = 'localhost'", `queen.http = "localhost": want host:port`},
		{"queen id", "[queen]\nid = 'a.b'", `queen.id = "a.b": want 1-128 letters`},
		{"queen shutdown grace", "[queen]\nshutdown_grace = '-1s'", `queen.shutdown_grace = -1s: want more than 0`},
		{"queen default timeout", "[queen]\ndefault_timeout = '0s'", `queen.default_timeout = 0s: want more than 0`},
		{"queen idle timeout", "[queen]\nidle_timeout = '-5s'", `queen.idle_timeout = -5s: want more than 0`},
		{"queen keep-alive", "[queen]\nkeep_alive_timeout = '0s'", `queen.keep_alive_timeout = 0s: want more than 0`},
		{"queen max tokens", "[queen]\ndefault_max_tokens = 0", `queen.default_max_tokens = 0: want 1 to`},
		{"queen first token after default timeout", "[queen]\nfirst_token_timeout = '20m'\ndefault_timeout = '10m'", `queen.first_token_timeout = 20m0s: want at most queen.default_timeout (10m0s)`},
		{"hive id", "[hive]\nid = 'no/slash'", `hive.id = "no/slash": want 1-128 letters`},
		{"hive grace below worker drain", "[hive]\nstop_grace = '20s'\n[worker]\nshutdown_grace = '25s'", `hive.stop_grace = 20s: want at least 6/5 × worker.shutdown_grace (25s)`},
		{"hive orphan grace", "[hive]\norphan_grace = '-2s'", `hive.orphan_grace = -2s: want -1s (never) or more than 0`},
		{"hive hung timeout zero", "[hive]\nhung_timeout = '0s'", `hive.hung_timeout = 0s: want -1s (never) or more than 0`},
		{"hive load timeout zero", "[hive]\nload_timeout = '0s'", `hive.load_timeout = 0s: want -1s (never) or more than 0`},
		{"hive worker log max", "[hive]\nworker_log_max_bytes = 0", `hive.worker_log_max_bytes = 0: want more than 0`},
		{"hive replicas", "[hive]\nreplicas = 0", `hive.replicas = 0: want 1 to 64`},
		{"hive slots", "[hive]\nslots = 5000", `hive.slots = 5000: want 1 to 4096`},
		{"hive ctx", "[hive]\nctx = -1", `hive.ctx = -1: want 0 to 1048576`},
		{"hive heartbeat vs ttl", "[hive]\nheartbeat_interval = '10s'", `hive.heartbeat_interval = 10s: want below half of provision.hive_ttl (15s)`},
		{"restart jitter", "[hive.restart]\njitter = 1.5", `hive.restart.jitter = 1.5: want 0 to 1`},
		{"restart max delay", "[hive.restart]\ninitial_delay = '2m'", `hive.restart.max_delay = 1m0s: want at least hive.restart.initial_delay (2m0s)`},
		{"restart breaker", "[hive.restart]\nbreaker_failures = 0", `hive.restart.breaker_failures = 0: want -1 (no breaker) or more than 0`},
		{"restart max restarts", "[hive.restart]\nmax_restarts = -3", `hive.restart.max_restarts = -3: want 0 (unlimited) or more`},
		{"model name", "[[hive.models]]\nname = 'bad name'\npath = 'm.gguf'", `hive.models[0].name = "bad name": want 1-128 letters`},
		{"model without path", "[[hive.models]]\nname = 'llama'", `hive.models[0].path = "": want a GGUF file`},
		{"model twice", "[[hive.models]]\nname = 'a'\npath = 'a.gguf'\n[[hive.models]]\nname = 'a'\npath = 'b.gguf'", `hive.models[1].name = "a": want a name not already used by hive.models[0]`},
		{"model replicas", "[[hive.models]]\nname = 'a'\npath = 'a.gguf'\nreplicas = 100", `hive.models[0].replicas = 100: want 0 to 64`},
		{"worker ack wait", "[worker]\nack_wait = '10ms'", `worker.ack_wait = 10ms: want at least 100ms`},
		{"worker ack wait vs heartbeat", "[worker]\nack_wait = '1s'", `worker.ack_wait = 1s: want at least worker.heartbeat_interval (2s)`},
		{"worker shutdown grace", "[worker]\nshutdown_grace = '-1s'", `worker.shutdown_grace = -1s: want 0 (derived) or more`},
		{"worker attempts", "[worker]\nmax_attempts = 0", `worker.max_attempts = 0: want -1 (no limit) or 1 to 100`},
		{"worker heartbeat vs ttl", "[worker]\nheartbeat_interval = '8s'\nack_wait = '30s'", `worker.heartbeat_interval = 8s: want below half of provision.worker_ttl (15s)`},
		{"provision replicas", "[provision]\nreplicas = 2", `provision.replicas = 2: want 1, 3 or 5`},
		{"provision jobs max", "[provision]\njobs_max = 0", `provision.jobs_max = 0: want 1 or more`},
		{"provision per model above max", "[provision]\njobs_max = 10\njobs_max_per_model = 20", `provision.jobs_max_per_model = 20: want 1 to provision.jobs_max (10)`},
		{"provision worker ttl", "[provision]\nworker_ttl = '500ms'", `provision.worker_ttl = 500ms: want at least 1s`},
		{"provision dlq age", "[provision]\ndlq_max_age = '0s'", `provision.dlq_max_age = 0s: want more than 0`},
		{"hive two worker identities", "[hive]\nworker_nkey = '/k/worker.nk'\nworker_creds = '/k/worker.creds'", `hive.worker_creds = "/k/worker.creds": want empty when hive.worker_nkey is set: the workers take one identity`},
		{"provision audit age", "[provision]\naudit_max_age = '10ms'", `provision.audit_max_age = 10ms: want at least 1s`},
		{"provision audit bytes", "[provision]\naudit_max_bytes = -5", `provision.audit_max_bytes = -5: want 0 (no bound) or more`},
		{"provision audit replicas", "[provision]\naudit_replicas = 2", `provision.audit_replicas = 2: want 0 (provision.replicas), 1, 3 or 5`},
	}
	if len(cases) < 25 {
		t.Fatalf("only %d cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := Default()
			if err := Decode([]byte(c.toml), &f); err != nil {
				t.Fatalf("decode: %v", err)
			}
			err := f.Validate()
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Validate = %v, want Problems", err)
			}
			for _, p := range ps {
				if strings.HasPrefix(p.String(), c.want) {
					return
				}
			}
			t.Errorf("problems:\n%v\nwant one starting %q", err, c.want)
		})
	}
}

// A process checks the rules of its own sections only: a queen does not
// refuse a hive setting that its hives may set otherwise.
func TestValidateForSections(t *testing.T) {
	f := Default()
	f.Provision.HiveTTL = time.Second // below the hive's default heartbeat, twice
	if err := f.ValidateFor(QueenSections...); err != nil {
		t.Errorf("queen: %v", err)
	}
	if err := f.ValidateFor(HiveSections...); err == nil || !strings.Contains(err.Error(), "hive.heartbeat_interval") {
		t.Errorf("hive: %v, want the heartbeat refused", err)
	}
	if err := f.Validate(); err == nil {
		t.Error("the whole file passed")
	}
}

func TestDefaultsAreValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
}

// Validate reports every problem at once, not the first only.
func TestValidateListsEveryProblem(t *testing.T) {
	f := Default()
	if err := Decode([]byte("[log]\nlevel = 'x'\n[queen]\nidle_timeout = '-1s'\n[provision]\nreplicas = 4"), &f); err != nil {
		t.Fatal(err)
	}
	var ps Problems
	if !errors.As(f.Validate(), &ps) || len(ps) != 3 {
		t.Fatalf("problems %v, want 3", ps)
	}
}

func TestDecodeRefusesUnknownKeysAndBadValues(t *testing.T) {
	for _, c := range []struct{ toml, want string }{
		{"[queen]\nhttp_addr = ':1'", "unknown keys: queen.http_addr"},
		{"[quen]\nhttp = ':1'", "unknown keys: quen, quen.http"},
		{"[[hive.models]]\nname = 'a'\nfile = 'x'", "unknown keys: hive.models.file"},
		{"[queen]\nidle_timeout = 'soon'", "idle_timeout"},
		{"[hive]\nreplicas = 'two'", "replicas"},
		{"[queen\n", "toml"},
	} {
		f := Default()
		err := Decode([]byte(c.toml), &f)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error with %q", c.toml, err, c.want)
		}
	}
}

// Precedence: the environment overrides the file, which overrides the
// defaults; a key the file does not set keeps its default.
func TestEnvironmentOverridesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rbee.toml")
	if err := os.WriteFile(path, []byte("[queen]\nhttp = '127.0.0.1:9000'\nidle_timeout = '20s'\n[log]\nlevel = 'debug'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RBEE_QUEEN_IDLE_TIMEOUT", "45s")
	t.Setenv("RBEE_HTTP", "127.0.0.1:1111") // a legacy name loses to the file? no: it is the environment
	t.Setenv("RBEE_QUEEN_HTTP", "127.0.0.1:2222")
	t.Setenv("RBEE_WORKER_ACK_WAIT", "40s")
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Queen.IdleTimeout != 45*time.Second || f.Queen.HTTP != "127.0.0.1:2222" || f.Worker.AckWait != 40*time.Second {
		t.Errorf("env did not win: %+v %+v", f.Queen, f.Worker)
	}
	if f.Log.Level != "debug" {
		t.Errorf("log level %q, want the file's debug", f.Log.Level)
	}
	if f.Queen.FirstTokenTimeout != Default().Queen.FirstTokenTimeout {
		t.Errorf("first token timeout %v, want the default", f.Queen.FirstTokenTimeout)
	}
}

// The audit stream's retention is the operator's, from the file or the
// environment, down to what provisioning creates.
func TestAuditRetentionReachesProvisioning(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rbee.toml")
	if err := os.WriteFile(path, []byte("[provision]\naudit_max_age = '720h'\naudit_replicas = 3\nreplicas = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RBEE_PROVISION_AUDIT_MAX_BYTES", "1073741824")
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	p := f.Provisioning()
	if p.EventsMaxAge != 720*time.Hour || p.EventsMaxBytes != 1<<30 || p.EventsReplicas != 3 {
		t.Errorf("provisioning %+v: want the audit retention of the file and environment", p)
	}
	if d := Default().Provisioning(); d.EventsMaxAge != bus.DefaultEventsMaxAge || d.EventsMaxBytes != 0 || d.EventsReplicas != 0 {
		t.Errorf("default provisioning %+v: want a week, no byte bound, the streams' replicas", d)
	}
}

func TestLegacyEnvironment(t *testing.T) {
	f := Default()
	if err := ApplyEnv(&f, []string{"RBEE_HTTP=127.0.0.1:1", "RBEE_API_KEYS=/a:/b"}); err != nil {
		t.Fatal(err)
	}
	if f.Queen.HTTP != "127.0.0.1:1" || len(f.Queen.APIKeys) != 2 {
		t.Errorf("legacy variables not read: %+v", f.Queen)
	}
	if err := ApplyEnv(&f, []string{"RBEE_QUEEN_IDLE_TIMEOUT=soon"}); err == nil {
		t.Error("a bad duration in the environment was accepted")
	}
}

// Printed and diffed configurations never show a secret.
func TestSecretsMasked(t *testing.T) {
	f := Default()
	f.NATS.User, f.NATS.Password, f.NATS.Token = "u", "hunter2", "tok-123"
	out, err := f.TOML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "hunter2") || strings.Contains(out, "tok-123") || !strings.Contains(out, masked) {
		t.Errorf("secrets in:\n%s", out)
	}
	back := Default()
	if err := Decode([]byte(out), &back); err != nil {
		t.Errorf("the printed config does not decode: %v", err)
	}
	g := f
	g.NATS.Password = "other"
	g.Queen.IdleTimeout = time.Second
	ch := Diff(f, g)
	if len(ch) != 2 {
		t.Fatalf("changes %v, want 2", ch)
	}
	for _, c := range ch {
		if strings.Contains(c.String(), "hunter2") || strings.Contains(c.String(), "other") {
			t.Errorf("secret in change %v", c)
		}
	}
	if ch[1].String() != "queen.idle_timeout: 1m0s -> 1s" {
		t.Errorf("change %q", ch[1])
	}
}

// An added list entry shows its set fields only; a removed one each field.
func TestDiffOfModels(t *testing.T) {
	old, next := Default(), Default()
	next.Hive.Models = []Model{{Name: "a", Path: "a.gguf"}}
	ch := Diff(old, next)
	if len(ch) != 2 || ch[0].String() != `hive.models[0].name: (none) -> "a"` || ch[1].String() != `hive.models[0].path: (none) -> "a.gguf"` {
		t.Errorf("added: %v", ch)
	}
	if ch := Diff(next, old); len(ch) != 7 || ch[0].New != "(removed)" {
		t.Errorf("removed: %v", ch)
	}
}

func TestModelSpecs(t *testing.T) {
	f := Default()
	f.Hive.Slots, f.Hive.Threads = 2, 3
	f.Hive.Models = []Model{{Name: "a", Path: "a.gguf", Slots: 4}, {Name: BundledName}}
	specs, err := f.ModelSpecs(func() (string, error) { return "/cache/stories.gguf", nil })
	if err != nil {
		t.Fatal(err)
	}
	if specs[0].Slots != 4 || specs[1].Slots != 2 || specs[1].Path != "/cache/stories.gguf" || specs[0].Threads != 3 {
		t.Errorf("specs %+v", specs)
	}
}
