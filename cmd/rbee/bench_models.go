package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/infer/synth"
)

// synthTypes are the weight types package synth writes (Q4_K is its Q4_K_M mix).
var synthTypes = []string{"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"}

// benchModel is one model file the benchmarks run.
type benchModel struct {
	Name  string `json:"name"` // also its name on the bus when served
	Shape string `json:"shape"`
	Type  string `json:"type"`
	Path  string `json:"path"`
}

// modelCache makes models with package synth and keeps them in dir, keyed
// by shape, type and seed; a file is made only when it is missing or
// unreadable.
type modelCache struct {
	dir, vocabPath string
	seed           uint64
	vocab          *synth.Vocab // read on first use
}

func newModelCache(dir, vocab string, seed uint64) (*modelCache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("bench: model cache: %w", err)
	}
	return &modelCache{dir: dir, vocabPath: vocab, seed: seed}, nil
}

// synth returns the cached model of this shape and type, making it first
// if needed.
func (c *modelCache) synth(shape, typ string) (benchModel, error) {
	bm := benchModel{Name: shape + "-" + typ, Shape: shape, Type: typ,
		Path: filepath.Join(c.dir, fmt.Sprintf("%s-%s-seed%d.gguf", shape, typ, c.seed))}
	if readableGGUF(bm.Path) {
		return bm, nil
	}
	spec, err := synth.Shape(shape)
	if err != nil {
		return bm, err
	}
	spec.Seed = c.seed
	ft, err := synth.ParseFileType(typ)
	if err != nil {
		return bm, err
	}
	if c.vocab == nil {
		if c.vocab, err = synth.ReadVocab(c.vocabPath); err != nil {
			return bm, fmt.Errorf("%w (pass --vocab)", err)
		}
	}
	// WriteFile renames a finished file into place: a stopped run leaves
	// no half model behind.
	if err := synth.WriteFile(bm.Path, spec, ft, c.vocab); err != nil {
		return bm, err
	}
	return bm, nil
}

func readableGGUF(path string) bool {
	f, err := gguf.Open(path)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}

// weightBytes is what one decode step reads from the model file: every
// tensor but the token embedding, from which it looks up one row, unless
// the embedding is also the output matrix (tied), which it reads whole.
func weightBytes(path string) (weights, file int64, err error) {
	f, err := gguf.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	_, untied := f.Tensor("output.weight")
	for _, t := range f.Tensors {
		if t.Name == "token_embd.weight" && untied {
			continue
		}
		weights += int64(len(t.Data))
	}
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, err
	}
	return weights, st.Size(), nil
}

// warmPageCache reads the file once so that the first timed run does not
// wait for the disk.
func warmPageCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}
