package infer

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/infer/synth"
)

// The synth20M models of testdata/synth20m, each with the sha256 of llama.cpp's file and the
// largest logit difference the engine may show. F16 gets 1e-3 because llama.cpp itself moves by
// 3.7e-4 between builds there: rounding activations to F16 amplifies summation-order noise (so the
// BF16 and quantised files, at 1e-5, are what check the KV cache and activation rounding).
var synth20M = []struct {
	ft     synth.FileType
	sha256 string
	tol    float64
}{
	{synth.F32, "97ee11ea396fb42989b8050fe0739bd41b83dd69dd47104a4940c422625d6897", f32Tolerance()},
	{synth.F16, "cc98d1f990174d7e998fb58e54b5e4eb6967184e15f3fd6c8fb2af9aa0b638cb", 1e-3},
	{synth.BF16, "7ebd01683163377613d34ca8275ef1d6747fae5606c8bfec379c34a7a186e248", 1e-5},
	{synth.Q8_0, "c1ccd1e86f1fad94760712e5ca980bb28751a434870c0db7b4ac83d2cbb03eeb", 1e-5},
	{synth.Q4_0, "5d06a9d69101645da99d998e9df1d435f0a43835434cc0765deaa9b4b1fee281", 1e-5},
	{synth.Q4_K_M, "ddb17ac40e994496b1a1e521dd243b656df150009db81fb82062e46fd0614f42", 1e-5},
	{synth.Q6_K, "2732609e7d1e3b98cc2a086473ac59a511ca08837da2d50d469beec8899edbb3", 1e-5},
}

// f32Tolerance is 1e-5 where quant installs its AVX2 F32 kernel, which sums in ggml's order (3e-7
// measured). The plain Go kernel sums in another order, and the F16 rounding of K and V amplifies
// that to 2.1e-5; 5e-5 still catches an F32 KV cache (4.5e-4).
func f32Tolerance() float64 {
	if runtime.GOARCH == "amd64" && cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		return 1e-5
	}
	return 5e-5
}

// TestGGMLReference runs every synth20M type greedily and compares prompt ids, the 32 generated
// ids and the logits of the first three steps with llama.cpp's.
func TestGGMLReference(t *testing.T) {
	dir := testModelDir(t)
	for _, c := range synth20M {
		name := "synth20M-" + strings.ToLower(c.ft.String())
		t.Run(c.ft.String(), func(t *testing.T) {
			path := synthFile(t, dir, name+".gguf", c.ft, c.sha256)
			ref := readGGMLReference(t, "testdata/synth20m/"+name+".ref.txt.gz")
			m, err := Load(path, Options{Threads: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			s, err := m.NewSession(0)
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.Generate(context.Background(), Request{
				Prompt: "Once upon a time", MaxTokens: 32, Sampling: sample.Params{Temperature: 0}, LogitSteps: 3,
			}, func(Token) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(res.PromptIDs, ref.promptIDs) {
				t.Errorf("prompt ids %v, want %v", res.PromptIDs, ref.promptIDs)
			}
			if len(res.Logits) != len(ref.logits) {
				t.Fatalf("%d logit steps, want %d", len(res.Logits), len(ref.logits))
			}
			worst := 0.0
			for step, want := range ref.logits {
				got := res.Logits[step]
				if len(got) != len(want) {
					t.Fatalf("step %d: %d logits, want %d", step, len(got), len(want))
				}
				for i := range want {
					worst = max(worst, math.Abs(float64(got[i])-float64(want[i])))
				}
			}
			t.Logf("max |logit - llama.cpp| over steps 0-2: %.3g (tolerance %g)", worst, c.tol)
			if worst > c.tol {
				t.Errorf("logits differ by up to %.3g, want <= %g", worst, c.tol)
			}
			// The ids switch where the top two logits are close (see the README of the files), so
			// compare them after the logits: a mismatch here with close logits is numeric noise.
			if !slices.Equal(res.GeneratedIDs, ref.generatedIDs) {
				t.Errorf("generated ids\n got %v\nwant %v", res.GeneratedIDs, ref.generatedIDs)
			}
		})
	}
}

// testModelDir is where regenerated models are kept between runs: the user cache directory, or a
// temporary one where there is none.
func testModelDir(t testing.TB) string {
	if base, err := os.UserCacheDir(); err == nil {
		dir := filepath.Join(base, "rbee", "testmodels")
		if err := os.MkdirAll(dir, 0o755); err == nil {
			return dir
		}
	}
	return t.TempDir()
}

// synthFile returns the path of the tiny model in type ft under dir, writing it unless a file with
// the wanted sha256 is already there, and fails the test unless the file has that sha256.
func synthFile(t *testing.T, dir, name string, ft synth.FileType, want string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if sum, err := fileSHA256(path); err == nil && sum == want {
		return path
	}
	start := time.Now()
	v, err := synth.ReadVocab("tokenizer/testdata/ggml-vocab-llama-spm.gguf")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := synth.Shape("tiny")
	if err != nil {
		t.Fatal(err)
	}
	if err := synth.WriteFile(path, spec, ft, v); err != nil {
		t.Fatal(err)
	}
	sum, err := fileSHA256(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum != want {
		t.Fatalf("regenerated %s has sha256 %s, want %s (llama.cpp's file)", name, sum, want)
	}
	t.Logf("regenerated %s in %v", path, time.Since(start).Round(time.Millisecond))
	return path
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

type ggmlReference struct {
	promptIDs, generatedIDs []int32
	logits                  [][]float32
}

// readGGMLReference reads a qref output: prompt_ids, generated_ids, then one "step N logits" line
// per step.
func readGGMLReference(t *testing.T, path string) ggmlReference {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	zr, err := gzip.NewReader(fh)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var ref ggmlReference
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 1<<22)
	for sc.Scan() {
		key, values, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			t.Fatalf("%s: line without a colon: %.40q", path, sc.Text())
		}
		fields := strings.Fields(values)
		switch {
		case key == "prompt_ids" || key == "generated_ids":
			ids := make([]int32, len(fields))
			for i, f := range fields {
				v, err := strconv.ParseInt(f, 10, 32)
				if err != nil {
					t.Fatalf("%s: %s: %v", path, key, err)
				}
				ids[i] = int32(v)
			}
			if key == "prompt_ids" {
				ref.promptIDs = ids
			} else {
				ref.generatedIDs = ids
			}
		case strings.HasPrefix(key, "step "):
			row := make([]float32, len(fields))
			for i, f := range fields {
				v, err := strconv.ParseFloat(f, 32)
				if err != nil {
					t.Fatalf("%s: %s: %v", path, key, err)
				}
				row[i] = float32(v)
			}
			ref.logits = append(ref.logits, row)
		default:
			t.Fatalf("%s: unknown line %q", path, key)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(ref.promptIDs) == 0 || len(ref.generatedIDs) != 32 || len(ref.logits) != 3 {
		t.Fatalf("%s: %d prompt ids, %d generated, %d logit steps; want some, 32, 3", path,
			len(ref.promptIDs), len(ref.generatedIDs), len(ref.logits))
	}
	return ref
}
