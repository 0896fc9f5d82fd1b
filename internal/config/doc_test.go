package config

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// docs/CONFIG.md is what the types say; go generate ./internal/config
// makes it again.
func TestConfigDocIsCurrent(t *testing.T) {
	got, err := os.ReadFile("../../docs/CONFIG.md")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != Markdown() {
		t.Error("docs/CONFIG.md is stale: run go generate ./internal/config")
	}
}

// Every key is in the reference, and every example decodes and validates.
func TestConfigDocExamples(t *testing.T) {
	doc := Markdown()
	for _, key := range []string{"`idle_timeout`", "`RBEE_QUEEN_IDLE_TIMEOUT`", "`NATS_URL`", "`RBEE_HIVE_RESTART_JITTER`", "### [[hive.models]]", "`RBEE_LOG_LEVEL`"} {
		if !strings.Contains(doc, key) {
			t.Errorf("the reference lacks %s", key)
		}
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(doc, -1)
	if len(blocks) < 2 {
		t.Fatalf("%d examples", len(blocks))
	}
	for _, b := range blocks {
		f := Default()
		if err := Decode([]byte(b[1]), &f); err != nil {
			t.Errorf("example does not decode: %v\n%s", err, b[1])
			continue
		}
		if err := f.Validate(); err != nil {
			t.Errorf("example is invalid: %v\n%s", err, b[1])
		}
	}
}
