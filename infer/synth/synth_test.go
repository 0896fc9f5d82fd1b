package synth

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/infer/quant"
)

const vocabPath = "../tokenizer/testdata/ggml-vocab-llama-spm.gguf"

// tinySHA256 are the sha256 values of the synth20M files of llama.cpp c392e509 (the F32 model
// written by the README's generator, the others by llama-quantize from it).
var tinySHA256 = map[FileType]string{
	F32:    "97ee11ea396fb42989b8050fe0739bd41b83dd69dd47104a4940c422625d6897",
	F16:    "cc98d1f990174d7e998fb58e54b5e4eb6967184e15f3fd6c8fb2af9aa0b638cb",
	BF16:   "7ebd01683163377613d34ca8275ef1d6747fae5606c8bfec379c34a7a186e248",
	Q8_0:   "c1ccd1e86f1fad94760712e5ca980bb28751a434870c0db7b4ac83d2cbb03eeb",
	Q4_0:   "5d06a9d69101645da99d998e9df1d435f0a43835434cc0765deaa9b4b1fee281",
	Q4_K_M: "ddb17ac40e994496b1a1e521dd243b656df150009db81fb82062e46fd0614f42",
	Q6_K:   "2732609e7d1e3b98cc2a086473ac59a511ca08837da2d50d469beec8899edbb3",
}

func readVocab(t *testing.T) *Vocab {
	t.Helper()
	v, err := ReadVocab(vocabPath)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func tiny(t *testing.T) Spec {
	t.Helper()
	s, err := Shape("tiny")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func write(t *testing.T, s Spec, ft FileType, v *Vocab) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Write(&buf, s, ft, v); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestTinyMatchesLlamaCpp checks every file type byte for byte against llama.cpp's files.
func TestTinyMatchesLlamaCpp(t *testing.T) {
	v, s := readVocab(t), tiny(t)
	for _, ft := range FileTypes() {
		t.Run(ft.String(), func(t *testing.T) {
			sum := sha256.Sum256(write(t, s, ft, v))
			if got := hex.EncodeToString(sum[:]); got != tinySHA256[ft] {
				t.Errorf("sha256 %s, want %s", got, tinySHA256[ft])
			}
		})
	}
}

// TestTinyWeights pins the generator's draws with the README's checks, independent of the layout.
func TestTinyWeights(t *testing.T) {
	f, err := gguf.Parse(write(t, tiny(t), F32, readVocab(t)))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"token_embd.weight":   "7bfee8530cdcadd17586068e399e787d51cb4a77bc4c991afb161550d7ca330f",
		"blk.1.ffn_up.weight": "87427882dc7eb689c9d523f09010d3e5718a6e25079acfebaa994babae13e872",
	} {
		ti, ok := f.Tensor(name)
		if !ok {
			t.Fatalf("no %s", name)
		}
		if sum := sha256.Sum256(ti.Data); hex.EncodeToString(sum[:]) != want {
			t.Errorf("%s: sha256 %x, want %s", name, sum, want)
		}
	}
}

// TestTensorTypes checks the mix against the types of the README's files and, for an untied
// 12-layer model, against llama_tensor_get_type by hand.
func TestTensorTypes(t *testing.T) {
	typesOf := func(s Spec, ft FileType) map[string]quant.Type {
		m := map[string]quant.Type{}
		for _, tn := range layout(s, 4) {
			m[tn.name] = tensorType(ft, s, tn)
		}
		return m
	}
	count := func(m map[string]quant.Type) string {
		n := map[quant.Type]int{}
		for _, typ := range m {
			n[typ]++
		}
		var parts []string
		for typ, c := range n {
			parts = append(parts, fmt.Sprintf("%s×%d", typ, c))
		}
		slices.Sort(parts)
		return strings.Join(parts, " ")
	}
	s := tiny(t)
	for ft, want := range map[FileType]string{
		F32: "F32×20", F16: "F16×15 F32×5", BF16: "BF16×15 F32×5", Q8_0: "F32×5 Q8_0×15",
		Q4_0: "F32×5 Q4_0×14 Q6_K×1", Q4_K_M: "F32×5 Q4_K×12 Q6_K×3", Q6_K: "F32×5 Q6_K×15",
	} {
		if got := count(typesOf(s, ft)); got != want {
			t.Errorf("tiny %s: %s, want %s", ft, got, want)
		}
	}
	m := typesOf(s, Q4_K_M)
	for _, name := range []string{"token_embd.weight", "blk.1.attn_v.weight", "blk.1.ffn_down.weight"} {
		if m[name] != quant.Q6_K {
			t.Errorf("tiny Q4_K_M %s is %s, want Q6_K", name, m[name])
		}
	}

	big, err := Shape("stories110m")
	if err != nil {
		t.Fatal(err)
	}
	m = typesOf(big, Q4_K_M)
	moreBits := []int{0, 3, 6, 9, 10, 11} // use_more_bits for 12 layers
	for l := range big.Layers {
		want := quant.Q4_K
		if slices.Contains(moreBits, l) {
			want = quant.Q6_K
		}
		for _, kind := range []string{"attn_v", "ffn_down"} {
			if name := fmt.Sprintf("blk.%d.%s.weight", l, kind); m[name] != want {
				t.Errorf("stories110m Q4_K_M %s is %s, want %s", name, m[name], want)
			}
		}
		if name := fmt.Sprintf("blk.%d.attn_q.weight", l); m[name] != quant.Q4_K {
			t.Errorf("stories110m Q4_K_M %s is %s, want Q4_K", name, m[name])
		}
	}
	if m["output.weight"] != quant.Q6_K || m["token_embd.weight"] != quant.Q4_K {
		t.Errorf("stories110m Q4_K_M output %s, token_embd %s; want Q6_K, Q4_K", m["output.weight"], m["token_embd.weight"])
	}
	m = typesOf(big, Q4_0)
	if m["output.weight"] != quant.Q6_K || m["token_embd.weight"] != quant.Q4_0 {
		t.Errorf("stories110m Q4_0 output %s, token_embd %s; want Q6_K, Q4_0", m["output.weight"], m["token_embd.weight"])
	}
	if m := typesOf(big, Q8_0); m["output.weight"] != quant.Q8_0 {
		t.Errorf("stories110m Q8_0 output %s, want Q8_0", m["output.weight"])
	}
}

// TestUntiedOrder checks the layout of an untied model: the converter's order for F32,
// llama-quantize's for the rest, and output drawn after the layers.
func TestUntiedOrder(t *testing.T) {
	v := readVocab(t)
	s := Spec{Name: "small", Dim: 256, FFN: 256, Layers: 11, Heads: 4, KVHeads: 4, Context: 64, Seed: 3}
	names := func(ft FileType) []string {
		f, err := gguf.Parse(write(t, s, ft, v))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ti := range f.Tensors {
			out = append(out, ti.Name)
		}
		return out
	}
	f32 := names(F32)
	if want := []string{"token_embd.weight", "output_norm.weight", "output.weight", "blk.0.attn_q.weight"}; !slices.Equal(f32[:4], want) {
		t.Errorf("F32 order starts %v, want %v", f32[:4], want)
	}
	q := names(Q8_0)
	want := []string{"output.weight", "output_norm.weight", "token_embd.weight", "blk.0.attn_k.weight"}
	if !slices.Equal(q[:4], want) {
		t.Errorf("Q8_0 order starts %v, want %v", q[:4], want)
	}
	// Numeric block order: blk.10 after blk.9.
	if i, j := slices.Index(q, "blk.9.ffn_up.weight"), slices.Index(q, "blk.10.attn_k.weight"); i < 0 || j != i+1 {
		t.Errorf("blk.10 at %d, blk.9.ffn_up at %d", j, i)
	}

	tied := s
	tied.Tied = true
	a, b := weights(s, v.Size()), weights(tied, v.Size())
	for _, tb := range b {
		i := slices.IndexFunc(a, func(ta tensor) bool { return ta.name == tb.name })
		if !slices.Equal(a[i].data, tb.data) {
			t.Errorf("%s differs between the tied and untied model", tb.name)
		}
	}
}

func TestErrors(t *testing.T) {
	v := readVocab(t)
	if _, err := Shape("huge"); err == nil || !strings.Contains(err.Error(), "stories110m") {
		t.Errorf("Shape(huge): %v", err)
	}
	for in, want := range map[string]FileType{"q4_k": Q4_K_M, "Q4_K_M": Q4_K_M, "bf16": BF16, "F32": F32} {
		if got, err := ParseFileType(in); err != nil || got != want {
			t.Errorf("ParseFileType(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseFileType("Q5_K"); err == nil {
		t.Error("ParseFileType(Q5_K) succeeded")
	}
	odd := Spec{Name: "odd", Dim: 96, FFN: 256, Layers: 1, Heads: 2, KVHeads: 2, Context: 8}
	if err := Write(&bytes.Buffer{}, odd, Q6_K, v); err == nil {
		t.Error("Q6_K with dim 96 succeeded")
	}
	if err := Write(&bytes.Buffer{}, odd, F16, v); err != nil {
		t.Errorf("F16 with dim 96: %v", err)
	}
	bad := odd
	bad.KVHeads = 3
	if err := Write(&bytes.Buffer{}, bad, F32, v); err == nil {
		t.Error("3 KV heads for 2 heads succeeded")
	}
	if err := Write(&bytes.Buffer{}, odd, F32, nil); err == nil {
		t.Error("nil vocab succeeded")
	}
	if err := WriteFile(filepath.Join(t.TempDir(), "none", "x.gguf"), odd, F32, v); err == nil {
		t.Error("WriteFile into a missing directory succeeded")
	}
}

func TestWriteFile(t *testing.T) {
	v := readVocab(t)
	s := Spec{Name: "w", Dim: 64, FFN: 128, Layers: 1, Heads: 2, KVHeads: 1, Context: 16, Seed: 1, Tied: true}
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := WriteFile(path, s, Q8_0, v); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ft, _ := f.Int("general.file_type"); ft != int64(Q8_0) {
		t.Errorf("general.file_type %d", ft)
	}
	if n, _ := f.Int("llama.attention.head_count_kv"); n != 1 {
		t.Errorf("head_count_kv %d", n)
	}
	if matches, _ := filepath.Glob(path + ".tmp*"); len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}
