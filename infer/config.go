package infer

import (
	"fmt"
	"math"

	"github.com/rbee-dev/rbee/infer/gguf"
)

// Architectures the engine runs.
const (
	ArchLlama = "llama"
	ArchQwen2 = "qwen2"
)

// Hyperparameters are a model's shape, read from GGUF metadata.
type Hyperparameters struct {
	Arch          string
	Name          string
	VocabSize     int
	Dim           int
	Layers        int
	Heads         int
	KVHeads       int
	HeadDim       int
	FFN           int
	ContextLength int     // what the file says it was trained for
	RopeDims      int     // leading dimensions of each head that RoPE rotates
	RopeBase      float32 // theta
	RopeScale     float32 // linear position scale (1 = none)
	RopeNeoX      bool    // rotate (i, i+d/2) pairs instead of (2i, 2i+1)
	NormEps       float32
}

func readHyperparameters(f *gguf.File) (Hyperparameters, error) {
	var hp Hyperparameters
	arch, ok := f.String("general.architecture")
	if !ok {
		return hp, fmt.Errorf("metadata general.architecture is missing")
	}
	hp.Arch = arch
	switch arch {
	case ArchLlama:
	case ArchQwen2:
		hp.RopeNeoX = true
	default:
		return hp, fmt.Errorf("architecture %q is not supported (want %s or %s)", arch, ArchLlama, ArchQwen2)
	}
	hp.Name, _ = f.String("general.name")

	intKey := func(key string, dst *int, required bool) error {
		v, ok := f.Int(arch + "." + key)
		if !ok {
			if required {
				return fmt.Errorf("metadata %s.%s is missing or not an integer", arch, key)
			}
			return nil
		}
		if v <= 0 || v > math.MaxInt32 {
			return fmt.Errorf("metadata %s.%s = %d is out of range", arch, key, v)
		}
		*dst = int(v)
		return nil
	}
	for _, k := range []struct {
		key string
		dst *int
		req bool
	}{
		{"embedding_length", &hp.Dim, true},
		{"block_count", &hp.Layers, true},
		{"feed_forward_length", &hp.FFN, true},
		{"attention.head_count", &hp.Heads, true},
		{"attention.head_count_kv", &hp.KVHeads, false},
		{"context_length", &hp.ContextLength, false},
		{"attention.key_length", &hp.HeadDim, false},
		{"rope.dimension_count", &hp.RopeDims, false},
		{"vocab_size", &hp.VocabSize, false},
	} {
		if err := intKey(k.key, k.dst, k.req); err != nil {
			return hp, err
		}
	}
	if hp.KVHeads == 0 {
		hp.KVHeads = hp.Heads
	}
	if hp.HeadDim == 0 {
		hp.HeadDim = hp.Dim / hp.Heads
	}
	if hp.RopeDims == 0 {
		hp.RopeDims = hp.HeadDim
	}
	if hp.ContextLength == 0 {
		hp.ContextLength = 2048
	}
	if hp.Heads%hp.KVHeads != 0 {
		return hp, fmt.Errorf("head_count %d is not a multiple of head_count_kv %d", hp.Heads, hp.KVHeads)
	}
	if hp.RopeDims > hp.HeadDim || hp.RopeDims%2 != 0 {
		return hp, fmt.Errorf("rope.dimension_count %d does not fit head size %d", hp.RopeDims, hp.HeadDim)
	}

	hp.RopeBase = 10000
	if v, ok := f.Float(arch + ".rope.freq_base"); ok {
		hp.RopeBase = float32(v)
	}
	hp.RopeScale = 1
	scaling, _ := f.String(arch + ".rope.scaling.type")
	switch scaling {
	case "", "none":
	case "linear":
		if v, ok := f.Float(arch + ".rope.scaling.factor"); ok && v > 0 {
			hp.RopeScale = float32(1 / v)
		}
	default:
		return hp, fmt.Errorf("rope scaling %q is not supported (want none or linear)", scaling)
	}
	hp.NormEps = 1e-5
	if v, ok := f.Float(arch + ".attention.layer_norm_rms_epsilon"); ok {
		hp.NormEps = float32(v)
	}
	if !(hp.RopeBase > 0) || !(hp.NormEps > 0) {
		return hp, fmt.Errorf("rope.freq_base %v and rms epsilon %v must be positive", hp.RopeBase, hp.NormEps)
	}
	return hp, nil
}
