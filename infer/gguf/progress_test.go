package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee-dev/rbee/infer/quant"
)

// OpenProgress reads a file of several chunks in, saying so chunk by
// chunk, and parses it as Open does.
func TestOpenProgress(t *testing.T) {
	w := NewWriter()
	big := make([]byte, 5*progressChunk/2) // three chunks
	for i := range big {
		big[i] = byte(i * 7)
	}
	if err := w.AddTensor("big", quant.F32, []uint64{uint64(len(big) / 4)}, big); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "big.gguf")
	if err := os.WriteFile(path, write(t, w), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	var seen [][2]int64
	f, err := OpenProgress(path, func(done, total int64) { seen = append(seen, [2]int64{done, total}) })
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size := st.Size()
	want := [][2]int64{{0, size}, {progressChunk, size}, {2 * progressChunk, size}, {size, size}}
	if len(seen) != len(want) {
		t.Fatalf("reports %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("report %d is %v, want %v", i, seen[i], want[i])
		}
	}
	got, ok := f.Tensor("big")
	if !ok || !bytes.Equal(got.Data, big) {
		t.Fatalf("tensor big read back wrong (found %v)", ok)
	}
}

// A file that is not GGUF fails after its bytes were read, as with Open.
func TestOpenProgressRefusesGarbage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.gguf")
	if err := os.WriteFile(path, []byte("not a model at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	var last int64
	if _, err := OpenProgress(path, func(done, _ int64) { last = done }); err == nil {
		t.Fatal("garbage opened")
	}
	if last != 18 {
		t.Errorf("last report %d bytes, want 18", last)
	}
}
