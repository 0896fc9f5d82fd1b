// Package synth writes llama GGUF models with seeded random weights. The files are laid out the way
// llama.cpp's tools lay them out, so that a model written here in any supported type is byte for byte
// the file `llama-quantize` makes from the F32 one: tests regenerate reference models instead of
// storing them.
//
// Weights are math/rand/v2 draws, PCG(seed, seed^0x9e3779b97f4a7c15), NormFloat64()*0.02 rounded to
// float32, drawn in llama2.c checkpoint order: token_embd, then wq, wk, wv, wo, w1 (ffn_gate), w2
// (ffn_down), w3 (ffn_up), each for all layers at once (layer l is slice l), and last the output
// matrix of an untied model (llama2.c's wcls, which also follows the layers). Drawing the output last
// keeps every other weight of an untied model equal to the tied model with the same shape and seed.
// Matrices are row-major [out][in], which is GGUF's ne = [in, out] byte for byte. Norms are 1.0.
package synth

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/infer/quant"
)

// Spec is the shape of a synthetic llama model and the seed of its weights. The vocabulary size
// comes from the Vocab it is written with.
type Spec struct {
	Name    string // general.name
	Dim     int    // embedding width
	FFN     int    // SwiGLU hidden width
	Layers  int
	Heads   int
	KVHeads int // fewer than Heads: grouped-query attention
	Context int // llama.context_length
	Seed    uint64
	Tied    bool // no output.weight: the logits use token_embd
	// ChatTemplate, when set, is written as tokenizer.chat_template.
	ChatTemplate string
}

var shapes = map[string]Spec{
	// The synth20M model of the quantisation reference files (9.8M parameters despite the name).
	"tiny": {Name: "synth20M", Dim: 256, FFN: 768, Layers: 2, Heads: 4, KVHeads: 2, Context: 512, Seed: 7, Tied: true},
	// The llama2.c stories110M shape, with a separate output matrix.
	"stories110m": {Name: "stories110m", Dim: 768, FFN: 2048, Layers: 12, Heads: 12, KVHeads: 12, Context: 1024, Seed: 7},
}

// Shape returns the named shape: tiny or stories110m.
func Shape(name string) (Spec, error) {
	s, ok := shapes[strings.ToLower(name)]
	if !ok {
		return Spec{}, fmt.Errorf("synth: unknown shape %q (have %s)", name, strings.Join(ShapeNames(), ", "))
	}
	return s, nil
}

// ShapeNames lists the named shapes.
func ShapeNames() []string {
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// FileType is llama.cpp's llama_ftype, as stored in general.file_type. Q4_K_M and Q6_K are mixes:
// see tensorType.
type FileType uint32

// The file types synth writes.
const (
	F32    FileType = 0
	F16    FileType = 1
	Q4_0   FileType = 2
	Q8_0   FileType = 7
	Q4_K_M FileType = 15
	Q6_K   FileType = 18
	BF16   FileType = 32
)

var fileTypeNames = map[FileType]string{
	F32: "F32", F16: "F16", Q4_0: "Q4_0", Q8_0: "Q8_0", Q4_K_M: "Q4_K_M", Q6_K: "Q6_K", BF16: "BF16",
}

// FileTypes lists the supported file types in ascending id order.
func FileTypes() []FileType {
	ts := make([]FileType, 0, len(fileTypeNames))
	for t := range fileTypeNames {
		ts = append(ts, t)
	}
	slices.Sort(ts)
	return ts
}

func (t FileType) String() string {
	if n, ok := fileTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("ftype(%d)", uint32(t))
}

// ParseFileType reads a type name as llama-quantize spells it (case does not matter); Q4_K means
// Q4_K_M, as it does there.
func ParseFileType(s string) (FileType, error) {
	u := strings.ToUpper(s)
	if u == "Q4_K" {
		return Q4_K_M, nil
	}
	for t, n := range fileTypeNames {
		if n == u {
			return t, nil
		}
	}
	names := make([]string, 0, len(fileTypeNames)+1)
	for _, t := range FileTypes() {
		names = append(names, t.String())
	}
	return 0, fmt.Errorf("synth: unknown type %q (have %s, Q4_K)", s, strings.Join(names, ", "))
}

// base is the tensor type of the file type's ordinary matrices.
func (t FileType) base() quant.Type {
	switch t {
	case F16:
		return quant.F16
	case BF16:
		return quant.BF16
	case Q8_0:
		return quant.Q8_0
	case Q4_0:
		return quant.Q4_0
	case Q4_K_M:
		return quant.Q4_K
	case Q6_K:
		return quant.Q6_K
	}
	return quant.F32
}

// Vocab is the tokenizer.ggml.* metadata of a vocabulary GGUF, in file order.
type Vocab struct {
	kvs  []gguf.KV
	size int
}

// ReadVocab reads the tokenizer metadata of a GGUF file (llama.cpp's ggml-vocab-*.gguf files hold
// nothing else of use).
func ReadVocab(path string) (*Vocab, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("synth: vocab: %w", err)
	}
	defer f.Close()
	v, err := NewVocab(f)
	if err != nil {
		return nil, fmt.Errorf("synth: vocab %s: %w", path, err)
	}
	return v, nil
}

// NewVocab takes the tokenizer.ggml.* keys of f. The values are copies, so f may be closed after.
func NewVocab(f *gguf.File) (*Vocab, error) {
	v := &Vocab{}
	for _, kv := range f.KVs {
		if strings.HasPrefix(kv.Key, "tokenizer.ggml.") {
			v.kvs = append(v.kvs, kv)
		}
	}
	tokens, ok := f.Array("tokenizer.ggml.tokens")
	if !ok || tokens.Len() == 0 {
		return nil, errors.New("no tokenizer.ggml.tokens")
	}
	v.size = tokens.Len()
	return v, nil
}

// Size is the number of tokens.
func (v *Vocab) Size() int { return v.size }

func (s Spec) validate(t FileType, v *Vocab) error {
	if _, ok := fileTypeNames[t]; !ok {
		return fmt.Errorf("synth: unsupported file type %d", uint32(t))
	}
	if v == nil || v.size == 0 {
		return errors.New("synth: no vocabulary")
	}
	if s.Dim <= 0 || s.FFN <= 0 || s.Layers <= 0 || s.Heads <= 0 || s.KVHeads <= 0 || s.Context <= 0 {
		return fmt.Errorf("synth: %+v: every size must be positive", s)
	}
	if s.Dim%s.Heads != 0 || s.Heads%s.KVHeads != 0 || s.Dim/s.Heads%2 != 0 {
		return fmt.Errorf("synth: dim %d, %d heads, %d KV heads: heads must divide dim into even head sizes, KV heads divide heads", s.Dim, s.Heads, s.KVHeads)
	}
	// llama-quantize would fall back to other types for rows that are not whole blocks; synth
	// writes only the plain mix and refuses instead.
	block := 1
	switch t {
	case Q8_0:
		block = 32
	case Q4_0, Q4_K_M, Q6_K: // Q4_0 has a Q6_K output
		block = 256
	}
	// Row lengths are dim (ffn_down: ffn).
	if s.Dim%block != 0 || s.FFN%block != 0 {
		return fmt.Errorf("synth: %s needs dim and ffn to be multiples of %d; have %d and %d", t, block, s.Dim, s.FFN)
	}
	return nil
}

// tensor is one model tensor in float32.
type tensor struct {
	name  string
	kind  string // the name without "blk.N." and ".weight": attn_v, ffn_down, ...
	layer int    // -1 outside the blocks
	dims  []uint64
	data  []float32
}

// layout lists the model's tensors, without data, in the order llama.cpp's llama2.c converter
// writes them: token_embd, output_norm, output (untied only), then per layer attn_q, attn_k,
// attn_v, attn_output, attn_norm, ffn_gate, ffn_down, ffn_up, ffn_norm.
func layout(s Spec, vocab int) []tensor {
	d, f, kv := uint64(s.Dim), uint64(s.FFN), uint64(s.Dim/s.Heads*s.KVHeads)
	add := func(ts []tensor, layer int, kind string, dims ...uint64) []tensor {
		name := kind + ".weight"
		if layer >= 0 {
			name = fmt.Sprintf("blk.%d.%s", layer, name)
		}
		return append(ts, tensor{name: name, kind: kind, layer: layer, dims: dims})
	}
	ts := add(nil, -1, "token_embd", d, uint64(vocab))
	ts = add(ts, -1, "output_norm", d)
	if !s.Tied {
		ts = add(ts, -1, "output", d, uint64(vocab))
	}
	for l := range s.Layers {
		ts = add(ts, l, "attn_q", d, d)
		ts = add(ts, l, "attn_k", d, kv)
		ts = add(ts, l, "attn_v", d, kv)
		ts = add(ts, l, "attn_output", d, d)
		ts = add(ts, l, "attn_norm", d)
		ts = add(ts, l, "ffn_gate", d, f)
		ts = add(ts, l, "ffn_down", f, d)
		ts = add(ts, l, "ffn_up", d, f)
		ts = add(ts, l, "ffn_norm", d)
	}
	return ts
}

// weights returns layout's tensors with their data drawn (see the package comment).
func weights(s Spec, vocab int) []tensor {
	rng := rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
	draw := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64() * 0.02)
		}
		return v
	}
	d, f, L, kv := s.Dim, s.FFN, s.Layers, s.Dim/s.Heads*s.KVHeads
	all := map[string][]float32{"token_embd": draw(vocab * d)}
	for _, m := range []struct {
		kind string
		n    int
	}{{"attn_q", d * d}, {"attn_k", kv * d}, {"attn_v", kv * d}, {"attn_output", d * d},
		{"ffn_gate", f * d}, {"ffn_down", d * f}, {"ffn_up", f * d}} {
		all[m.kind] = draw(L * m.n)
	}
	if !s.Tied {
		all["output"] = draw(vocab * d)
	}
	ones := make([]float32, d)
	for i := range ones {
		ones[i] = 1
	}
	ts := layout(s, vocab)
	for i := range ts {
		t := &ts[i]
		if len(t.dims) == 1 {
			t.data = ones
			continue
		}
		t.data = all[t.kind]
		if t.layer >= 0 {
			n := int(t.dims[0] * t.dims[1])
			t.data = t.data[t.layer*n : (t.layer+1)*n]
		}
	}
	return ts
}

// useMoreBits is llama.cpp's use_more_bits: the layers whose attn_v and ffn_down Q4_K_M keeps in
// Q6_K (the first and last eighth, and every third layer between).
func useMoreBits(layer, layers int) bool {
	return layer < layers/8 || layer >= 7*layers/8 || (layer-layers/8)%3 == 2
}

// tensorType is llama-quantize's choice (llama_tensor_get_type, without imatrix or overrides) for
// the types synth writes: vectors stay F32; F16 and BF16 convert every matrix; for the quantised
// types the output matrix (token_embd when tied, since it is the output) is Q6_K unless the type is
// Q8_0, and Q4_K_M also keeps attn_v and ffn_down in Q6_K on the useMoreBits layers. An untied
// token_embd keeps the base type, as llama.cpp does.
func tensorType(ft FileType, s Spec, t tensor) quant.Type {
	base := ft.base()
	if len(t.dims) < 2 || ft == F32 || ft == F16 || ft == BF16 {
		if len(t.dims) < 2 {
			return quant.F32
		}
		return base
	}
	if t.kind == "output" || s.Tied && t.kind == "token_embd" {
		if base == quant.Q8_0 {
			return base
		}
		return quant.Q6_K
	}
	if ft == Q4_K_M && (t.kind == "attn_v" || t.kind == "ffn_down") && useMoreBits(t.layer, s.Layers) {
		return quant.Q6_K
	}
	return base
}

// quantizeOrder sorts tensors as llama-quantize writes them (llama_model_loader's
// weight_name_comparer): by block number, tensors outside blocks first, then by name.
func quantizeOrder(ts []tensor) {
	slices.SortStableFunc(ts, func(a, b tensor) int {
		if a.layer != b.layer {
			return a.layer - b.layer
		}
		return strings.Compare(a.name, b.name)
	})
}

// Write writes the model as file type t. F32 is laid out as llama.cpp's llama2.c converter writes
// it, every other type as llama-quantize writes it from that F32 file.
func Write(w io.Writer, s Spec, t FileType, v *Vocab) error {
	if err := s.validate(t, v); err != nil {
		return err
	}
	gw := gguf.NewWriter()
	set := func(key string, val any) {
		if err := gw.Set(key, val); err != nil {
			panic(err) // keys and value types are fixed here: a failure is a bug in this package
		}
	}
	set("general.architecture", "llama")
	set("general.name", s.Name)
	// The converter writes file_type here; llama-quantize re-sets it, which moves it to the end.
	if t == F32 {
		set("general.file_type", uint32(t))
	}
	set("llama.context_length", uint32(s.Context))
	set("llama.embedding_length", uint32(s.Dim))
	set("llama.feed_forward_length", uint32(s.FFN))
	set("llama.block_count", uint32(s.Layers))
	set("llama.attention.head_count", uint32(s.Heads))
	set("llama.attention.head_count_kv", uint32(s.KVHeads))
	set("llama.rope.dimension_count", uint32(s.Dim/s.Heads))
	set("llama.rope.freq_base", float32(10000))
	set("llama.attention.layer_norm_rms_epsilon", float32(1e-5))
	for _, kv := range v.kvs {
		set(kv.Key, kv.Value.Any())
	}
	if s.ChatTemplate != "" {
		set("tokenizer.chat_template", s.ChatTemplate)
	}
	if t != F32 {
		set("general.quantization_version", uint32(2))
		set("general.file_type", uint32(t))
	}

	ts := weights(s, v.size)
	if t != F32 {
		quantizeOrder(ts)
	}
	for _, tn := range ts {
		typ := tensorType(t, s, tn)
		data, err := encode(typ, int(tn.dims[0]), tn.data)
		if err != nil {
			return fmt.Errorf("synth: %s as %s: %w", tn.name, typ, err)
		}
		if err := gw.AddTensor(tn.name, typ, tn.dims, data); err != nil {
			return fmt.Errorf("synth: %w", err)
		}
	}
	if _, err := gw.WriteTo(w); err != nil {
		return fmt.Errorf("synth: write: %w", err)
	}
	return nil
}

// WriteFile writes the model to path through a temporary file in the same directory, so that a
// crash leaves no partial model under the final name.
func WriteFile(path string, s Spec, t FileType, v *Vocab) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if err := Write(tmp, s, t, v); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

// encode converts rows of rowLen elements to typ, spreading the rows over the CPUs; each row is
// quantised on its own, so the bytes do not depend on the split.
func encode(typ quant.Type, rowLen int, data []float32) ([]byte, error) {
	rb, err := quant.RowBytes(typ, rowLen)
	if err != nil {
		return nil, err
	}
	rows := len(data) / rowLen
	out := make([]byte, rows*rb)
	workers := max(1, min(runtime.GOMAXPROCS(0), rows/16))
	per := (rows + workers - 1) / workers
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for i := range workers {
		lo, hi := min(rows, i*per), min(rows, (i+1)*per)
		wg.Go(func() {
			errs[i] = quant.Quantize(typ, out[lo*rb:hi*rb], data[lo*rowLen:hi*rowLen])
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}
