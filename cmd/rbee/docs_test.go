package main

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// docCurls are the curl commands of path's sh blocks, continuation lines
// joined, in order.
func docCurls(t *testing.T, path string) []string {
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
			if c := strings.TrimSpace(cmd); strings.HasPrefix(c, "curl ") {
				out = append(out, c)
			}
			cmd = ""
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no curl example", path)
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
}
