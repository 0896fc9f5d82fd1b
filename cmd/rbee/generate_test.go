package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestGenerateJSONMatchesReference(t *testing.T) {
	for _, c := range []struct {
		ref  string
		args []string
	}{
		{"stories260K-once-upon-a-time-64.json", []string{"--prompt", "Once upon a time", "--max-tokens", "64"}},
		{"stories260K-empty-prompt-256.json", []string{"--ctx", "512", "--max-tokens", "256"}},
	} {
		t.Run(c.ref, func(t *testing.T) {
			data, err := os.ReadFile("../../infer/testdata/reference/" + c.ref)
			if err != nil {
				t.Fatal(err)
			}
			var want struct {
				PromptIDs    []int32 `json:"prompt_ids"`
				GeneratedIDs []int32 `json:"generated_ids"`
			}
			if err := json.Unmarshal(data, &want); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"generate", "--model", modelPath, "--temperature", "0", "--json"}, c.args...)
			out, err := exec.Command(rbeeBin, args...).Output()
			if err != nil {
				t.Fatalf("rbee %v: %v", args, err)
			}
			var got generateOutput
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("output %q: %v", out, err)
			}
			if !slices.Equal(got.PromptIDs, want.PromptIDs) || !slices.Equal(got.GeneratedIDs, want.GeneratedIDs) {
				t.Errorf("prompt %v generated %v, want %v %v", got.PromptIDs, got.GeneratedIDs, want.PromptIDs, want.GeneratedIDs)
			}
			if got.Text == "" || got.DecodeTokensPerSecond <= 0 || got.PromptTokensPerSecond <= 0 {
				t.Errorf("text %q, rates %v and %v", got.Text, got.PromptTokensPerSecond, got.DecodeTokensPerSecond)
			}
		})
	}
}

func TestGenerateStreamsTextAndFailsClearly(t *testing.T) {
	out, err := exec.Command(rbeeBin, "generate", "--model", modelPath, "--prompt", "Once upon a time",
		"--max-tokens", "64", "--temperature", "0").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), ", there was a little girl named Lily.") {
		t.Errorf("stdout %q", out)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"generate", "--prompt", "x"}, 2, "--model is required"},
		{[]string{"generate", "--model", "/nonexistent.gguf"}, 1, "no such file"},
		{[]string{"generate", "--model", modelPath, "--top-p", "2"}, 2, "top"},
		{[]string{"generate", "--model", "e2e_test.go"}, 1, "magic"},
		{[]string{"nonsense"}, 2, "unknown command"},
		{[]string{"generate", "--model", modelPath, "--logits", "2"}, 2, "needs --json"},
	} {
		cmd := exec.Command(rbeeBin, c.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != c.code || !strings.Contains(stderr.String(), c.msg) {
			t.Errorf("rbee %v: %v, stderr %q; want exit %d mentioning %q", c.args, err, stderr.String(), c.code, c.msg)
		}
	}
}

// --logits puts the first steps' logits into the JSON: one vector per step,
// a logit per vocabulary entry, whose argmax is the greedy token.
func TestGenerateLogits(t *testing.T) {
	out, err := exec.Command(rbeeBin, "generate", "--model", modelPath, "--prompt", "Once upon a time",
		"--max-tokens", "4", "--temperature", "0", "--json", "--logits", "3").Output()
	if err != nil {
		t.Fatal(err)
	}
	var got generateOutput
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Logits) != 3 {
		t.Fatalf("%d logit steps, want 3", len(got.Logits))
	}
	for step, row := range got.Logits {
		if len(row) != 512 {
			t.Fatalf("step %d: %d logits, want the vocabulary's 512", step, len(row))
		}
		best := 0
		for i, v := range row {
			if v > row[best] {
				best = i
			}
		}
		if int32(best) != got.GeneratedIDs[step] {
			t.Errorf("step %d: argmax %d, generated %d", step, best, got.GeneratedIDs[step])
		}
	}
}
