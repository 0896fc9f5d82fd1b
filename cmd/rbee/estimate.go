package main

import (
	"fmt"
	"os"

	"github.com/rbee-dev/rbee/hive"
	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/internal/config"
)

// workerOverhead is what a worker takes besides its weights and KV pool:
// the Go runtime, activations, scratch and NATS buffers.
const workerOverhead = 64 << 20

// estimateWorker is the hive's preflight estimate for a worker of m: the
// model file, which the worker maps and reads whole, plus the KV pool the
// engine reserves: keys and values in F16 for every layer, KV head and
// position of the pool (--kv-tokens, else slots × context), in blocks of
// 16 positions, as infer sizes it. Only the header is read.
func estimateWorker(m hive.ModelSpec) (hive.Need, error) {
	fi, err := os.Stat(m.Path)
	if err != nil {
		return hive.Need{}, err
	}
	f, err := gguf.Open(m.Path)
	if err != nil {
		return hive.Need{}, err
	}
	defer f.Close()
	arch, ok := f.String("general.architecture")
	if !ok {
		return hive.Need{}, fmt.Errorf("%s: no general.architecture", m.Path)
	}
	key := func(name string, def int64) int64 {
		if v, ok := f.Int(arch + "." + name); ok && v > 0 && v < 1<<31 {
			return v
		}
		return def
	}
	layers, heads, dim := key("block_count", 0), key("attention.head_count", 0), key("embedding_length", 0)
	if layers == 0 || heads == 0 || dim == 0 {
		return hive.Need{}, fmt.Errorf("%s: block_count, head_count or embedding_length missing", m.Path)
	}
	kvHeads, headDim := key("attention.head_count_kv", heads), key("attention.key_length", dim/heads)
	ctx := int64(m.ContextLength)
	if ctx == 0 { // what the worker picks: see runWorker
		ctx = min(key("context_length", 2048), config.DefaultContext)
	}
	tokens := int64(m.KVTokens)
	if tokens == 0 {
		tokens = int64(max(m.Slots, 1)) * ctx
	}
	const block, f16 = 16, 2
	positions := (tokens + block - 1) / block * block
	kv := 2 * positions * layers * kvHeads * headDim * f16
	return hive.Need{RAM: uint64(fi.Size()) + uint64(kv) + workerOverhead}, nil
}
