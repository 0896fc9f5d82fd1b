package gguf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/infer/quant"
)

var update = flag.Bool("update", false, "rewrite testdata/corrupt from the cases in this file")

const storiesPath = "../testdata/stories260K.gguf"

func write(t testing.TB, w *Writer) []byte {
	t.Helper()
	var buf bytes.Buffer
	n, err := w.WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("WriteTo reported %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func TestWriterRoundTrip(t *testing.T) {
	w := NewWriter()
	values := map[string]any{
		"u8": uint8(7), "i8": int8(-7), "u16": uint16(65000), "i16": int16(-300),
		"u32": uint32(1 << 31), "i32": int32(-1 << 30), "f32": float32(1.5), "bool": true,
		"str": "héllo", "u64": uint64(1 << 40), "i64": int64(-1 << 40), "f64": 2.25,
		"strs":   []string{"a", "", "ccc"},
		"f32s":   []float32{1, -2, 3.5},
		"i32s":   []int32{-1, 0, 1},
		"bools":  []bool{true, false},
		"nested": []Array{{Elem: TypeUint8, Values: []uint8{1, 2}}, {Elem: TypeString, Values: []string{"x"}}},
	}
	keys := []string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "u64", "i64", "f64", "strs", "f32s", "i32s", "bools", "nested"}
	for _, k := range keys {
		if err := w.Set(k, values[k]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Set("general.alignment", uint32(64)); err != nil {
		t.Fatal(err)
	}
	if err := w.Set("u8", uint8(1)); err == nil {
		t.Error("duplicate key accepted")
	}
	if err := w.AddTensor("a", quant.F32, []uint64{3}, f32bytes(1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("b", quant.F32, []uint64{2, 2}, f32bytes(4, 5, 6, 7)); err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("c", quant.F32, []uint64{2}, f32bytes(1)); err == nil {
		t.Error("tensor with too little data accepted")
	}
	f, err := Parse(write(t, w))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || f.Alignment != 64 || f.DataOffset%64 != 0 {
		t.Errorf("version %d alignment %d data offset %d", f.Version, f.Alignment, f.DataOffset)
	}
	for i, k := range keys {
		if f.KVs[i].Key != k {
			t.Errorf("KVs[%d] = %q, want %q (file order)", i, f.KVs[i].Key, k)
		}
		v, _ := f.Get(k)
		want := values[k]
		got := v.Any()
		if a, ok := got.(Array); ok {
			got = a.Values
			if n, ok := want.([]Array); ok {
				want = n
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", k, got, want)
		}
	}
	b, ok := f.Tensor("b")
	if !ok || !bytes.Equal(b.Data, f32bytes(4, 5, 6, 7)) || b.Elements() != 4 {
		t.Errorf("tensor b = %+v", b)
	}
	if b.Offset%64 != 0 {
		t.Errorf("tensor b offset %d not aligned", b.Offset)
	}
}

func TestStories260K(t *testing.T) {
	f, err := Open(storiesPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if arch, _ := f.String("general.architecture"); arch != "llama" {
		t.Errorf("architecture %q", arch)
	}
	if n, _ := f.Int("llama.embedding_length"); n != 64 {
		t.Errorf("embedding_length %d", n)
	}
	toks, ok := f.Array("tokenizer.ggml.tokens")
	if !ok || toks.Len() != 512 || toks.Elem != TypeString {
		t.Errorf("tokens: %v %d", ok, toks.Len())
	}
	emb, ok := f.Tensor("token_embd.weight")
	if !ok || !reflect.DeepEqual(emb.Dims, []uint64{64, 512}) || emb.Type != quant.F32 || len(emb.Data) != 64*512*4 {
		t.Fatalf("token_embd.weight = %+v", emb)
	}
	// 5 layers of 9 tensors, plus embedding, output norm and output.
	if len(f.Tensors) != 48 {
		t.Errorf("%d tensors, want 48", len(f.Tensors))
	}
	if err := f.Close(); err != nil {
		t.Error(err)
	}
}

// corruptCases are broken files, each with the field its error must name.
func corruptCases(t testing.TB) map[string]struct {
	data  []byte
	field string
} {
	w := NewWriter()
	_ = w.Set("general.architecture", "llama")
	_ = w.AddTensor("t", quant.F32, []uint64{4}, f32bytes(1, 2, 3, 4))
	good := write(t, w)
	le := binary.LittleEndian
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	// Offsets in good: 0 magic, 4 version, 8 tensor count, 16 kv count, 24 key.
	keyLen := len("general.architecture")
	valueType := 24 + 8 + keyLen
	tensorInfo := valueType + 4 + 8 + len("llama")
	dims := tensorInfo + 8 + 1 + 4
	typ := dims + 8
	offset := typ + 4
	out := map[string]struct {
		data  []byte
		field string
	}{
		"empty":            {nil, "magic"},
		"bad-magic":        {mod(func(b []byte) []byte { copy(b, "GGML"); return b }), "magic"},
		"version-1":        {mod(func(b []byte) []byte { le.PutUint32(b[4:], 1); return b }), "version"},
		"absurd-kv-count":  {mod(func(b []byte) []byte { le.PutUint64(b[16:], 1<<62); return b }), "metadata_kv_count"},
		"absurd-tensors":   {mod(func(b []byte) []byte { le.PutUint64(b[8:], 1<<40); return b }), "tensor_count"},
		"absurd-key-len":   {mod(func(b []byte) []byte { le.PutUint64(b[24:], 1<<60); return b }), "metadata[0].key"},
		"unknown-value":    {mod(func(b []byte) []byte { le.PutUint32(b[valueType:], 99); return b }), "metadata general.architecture type"},
		"unknown-tensor":   {mod(func(b []byte) []byte { le.PutUint32(b[typ:], 99); return b }), "tensor t type"},
		"zero-dim":         {mod(func(b []byte) []byte { le.PutUint64(b[dims:], 0); return b }), "tensor t dims[0]"},
		"huge-dim":         {mod(func(b []byte) []byte { le.PutUint64(b[dims:], 1<<40); return b }), "tensor t dims[0]"},
		"offset-past-end":  {mod(func(b []byte) []byte { le.PutUint64(b[offset:], 1<<20); return b }), "tensor t data"},
		"unaligned-offset": {mod(func(b []byte) []byte { le.PutUint64(b[offset:], 3); return b }), "tensor t offset"},
		"truncated-header": {good[:20], "metadata_kv_count"},
		"truncated-data":   {good[:len(good)-20], "tensor t data"},
	}
	arr := NewWriter()
	_ = arr.Set("a", []uint32{1, 2, 3})
	ab := write(t, arr)
	// The array count sits after the key (8+1 bytes), the value type and element type.
	le.PutUint64(ab[24+9+4+4:], 1<<61)
	out["absurd-array-count"] = struct {
		data  []byte
		field string
	}{ab, "metadata a count"}
	return out
}

func TestCorruptFiles(t *testing.T) {
	cases := corruptCases(t)
	dir := filepath.Join("testdata", "corrupt")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, c := range cases {
			if err := os.WriteFile(filepath.Join(dir, name+".gguf"), c.data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.gguf"))
	if len(files) != len(cases) {
		t.Fatalf("%d files in %s, %d cases: run go test ./infer/gguf -run TestCorruptFiles -update", len(files), dir, len(cases))
	}
	for _, path := range files {
		name := strings.TrimSuffix(filepath.Base(path), ".gguf")
		t.Run(name, func(t *testing.T) {
			c, ok := cases[name]
			if !ok {
				t.Fatalf("no case for %s", path)
			}
			_, err := Open(path)
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrFormat) {
				t.Fatalf("Open = %v, want a FormatError", err)
			}
			if fe.Field != c.field {
				t.Errorf("error %q names field %q, want %q", err, fe.Field, c.field)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// Every prefix of a valid file is an error, never a panic.
func TestEveryTruncation(t *testing.T) {
	data, err := os.ReadFile(storiesPath)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	header := int(f.DataOffset)
	for n := range header + 64 {
		if _, err := Parse(data[:n]); err == nil {
			t.Fatalf("prefix of %d bytes parsed without error", n)
		}
	}
	if _, err := Parse(data[:len(data)-1]); err == nil {
		t.Fatal("file missing its last byte parsed without error")
	}
}

func FuzzParse(f *testing.F) {
	for _, path := range []string{storiesPath} {
		data, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, c := range corruptCases(f) {
		f.Add(c.data)
	}
	w := NewWriter()
	_ = w.Set("nested", []Array{{Elem: TypeInt32, Values: []int32{1}}})
	_ = w.Set("s", []string{"a", "b"})
	_ = w.AddTensor("q", quant.Q8_0, []uint64{32}, make([]byte, 34))
	f.Add(write(f, w))
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		for _, ti := range g.Tensors {
			want, err := quant.TensorBytes(ti.Type, ti.Elements())
			if err != nil || uint64(len(ti.Data)) != want {
				t.Fatalf("tensor %q: %d bytes, want %d (%v)", ti.Name, len(ti.Data), want, err)
			}
		}
	})
}

// Version 2 has the same little-endian layout as 3, so both are read. (A
// big-endian file's version reads as a huge number and is refused.)
func TestReadsVersion2(t *testing.T) {
	w := NewWriter()
	_ = w.Set("general.architecture", "llama")
	_ = w.AddTensor("t", quant.F32, []uint64{2}, f32bytes(1, 2))
	data := write(t, w)
	binary.LittleEndian.PutUint32(data[4:], 2)
	f, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if arch, _ := f.String("general.architecture"); f.Version != 2 || arch != "llama" {
		t.Errorf("version %d, architecture %q", f.Version, arch)
	}
}
