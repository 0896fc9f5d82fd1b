package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const vocabPath = "../../infer/tokenizer/testdata/ggml-vocab-llama-spm.gguf"

// TestModelSynthQ8_0 writes the tiny model as Q8_0; the sha256 is llama.cpp's synth20M-q8_0.gguf.
func TestModelSynthQ8_0(t *testing.T) {
	out := filepath.Join(t.TempDir(), "tiny-q8_0.gguf")
	cmd := exec.Command(rbeeBin, "model", "synth", "--shape", "tiny", "--type", "Q8_0", "--vocab", vocabPath, "-o", out)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("rbee model synth: %v\n%s", err, msg)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	const want = "c1ccd1e86f1fad94760712e5ca980bb28751a434870c0db7b4ac83d2cbb03eeb"
	if got := fmt.Sprintf("%x", sha256.Sum256(data)); got != want {
		t.Errorf("sha256 %s, want %s", got, want)
	}
}

func TestModelSynthUsage(t *testing.T) {
	out := filepath.Join(t.TempDir(), "m.gguf")
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"model"}, 2, "no subcommand"},
		{[]string{"model", "convert"}, 2, "unknown subcommand"},
		{[]string{"model", "synth", "--type", "F32", "--vocab", vocabPath, "-o", out}, 2, "-shape is required"},
		{[]string{"model", "synth", "--shape", "tiny", "--vocab", vocabPath, "-o", out}, 2, "-type is required"},
		{[]string{"model", "synth", "--shape", "tiny", "--type", "F32", "-o", out}, 2, "-vocab is required"},
		{[]string{"model", "synth", "--shape", "tiny", "--type", "F32", "--vocab", vocabPath}, 2, "-o is required"},
		{[]string{"model", "synth", "--shape", "big", "--type", "F32", "--vocab", vocabPath, "-o", out}, 2, "unknown shape"},
		{[]string{"model", "synth", "--shape", "tiny", "--type", "Q5_K", "--vocab", vocabPath, "-o", out}, 2, "unknown type"},
		{[]string{"model", "synth", "--shape", "tiny", "--type", "F32", "--vocab", "missing.gguf", "-o", out}, 1, "missing.gguf"},
	} {
		msg, err := exec.Command(rbeeBin, c.args...).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != c.code || !strings.Contains(string(msg), c.msg) {
			t.Errorf("rbee %v: %v, output %q; want exit %d mentioning %q", c.args, err, msg, c.code, c.msg)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed run left %s: %v", out, err)
	}
}
