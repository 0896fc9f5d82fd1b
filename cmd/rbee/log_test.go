package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// JSON logs carry durations as people read them, in groups too.
func TestJSONLogsWriteDurationsReadably(t *testing.T) {
	var buf bytes.Buffer
	newLogger(&buf, "info").Info("stopping", "grace", 30*time.Second,
		slog.Group("job", "queued", 1500*time.Microsecond), "tokens", 5)
	line := buf.String()
	for _, want := range []string{`"grace":"30s"`, `"job":{"queued":"1.5ms"}`, `"tokens":5`} {
		if !strings.Contains(line, want) {
			t.Errorf("log line %s: want %s in it", line, want)
		}
	}
}
