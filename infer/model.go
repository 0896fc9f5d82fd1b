// Package infer is rbee's inference engine: it loads a GGUF model once and
// advances batches of sequences through it (Engine), with continuous
// batching on top (Scheduler) and a one-sequence Session for simple use.
package infer

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"time"

	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/infer/quant"
	"github.com/rbee-dev/rbee/infer/tokenizer"
)

// Options tune how a model is loaded.
type Options struct {
	// Threads split each operation of the forward pass; 0 means one per CPU.
	Threads int
	Logger  *slog.Logger
	// Progress, when set, is told how much of the file Load has read into
	// memory: first with nothing read, last with all of it, and between
	// them at most every progressInterval and every percent. It is called
	// on Load's goroutine.
	Progress func(LoadProgress)
}

// LoadProgress is how far a Load has got, in bytes of the model file.
type LoadProgress struct {
	Done, Total int64
}

// progressInterval is the least time between two progress reports of a
// load but its last.
const progressInterval = 100 * time.Millisecond

// throttle passes a load's progress on at a bounded rate: the first report
// and the last, and between them those at least progressInterval and a
// percent of the file after the one told before.
type throttle struct {
	fn   func(LoadProgress)
	now  func() time.Time
	last LoadProgress
	at   time.Time
	told bool
}

func (t *throttle) report(done, total int64) {
	p := LoadProgress{Done: done, Total: total}
	now := t.now()
	if t.told && done < total && (now.Sub(t.at) < progressInterval || (done-t.last.Done)*100 < total) {
		return
	}
	t.last, t.at, t.told = p, now, true
	t.fn(p)
}

// Model is a loaded model. Its weights stay in the memory-mapped file; it is
// safe for concurrent use by many sessions.
type Model struct {
	hp       Hyperparameters
	file     *gguf.File
	tok      *tokenizer.Tokenizer
	template *chat.Template
	tmplErr  error
	tokEmb   quant.Matrix
	output   [1]quant.Matrix
	outNorm  []float32
	// ropeFactors divide the RoPE frequencies pair by pair (rope_freqs);
	// nil when the file has none.
	ropeFactors []float32
	layers      []layer
	pool        *pool
	log         *slog.Logger
	grammars    grammars // constrained sampling's vocabulary and masks
}

// Load memory-maps and checks the model at path.
func Load(path string, opts Options) (*Model, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var progress func(done, total int64)
	if opts.Progress != nil {
		progress = (&throttle{fn: opts.Progress, now: time.Now}).report
	}
	f, err := gguf.OpenProgress(path, progress)
	if err != nil {
		return nil, err
	}
	m, err := newModel(f, opts.Threads, log)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return m, nil
}

func newModel(f *gguf.File, threads int, log *slog.Logger) (*Model, error) {
	hp, err := readHyperparameters(f)
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if hp.VocabSize == 0 {
		hp.VocabSize = tok.VocabSize()
	}
	m := &Model{hp: hp, file: f, tok: tok, log: log}
	w := weightLoader{f: f}
	m.tokEmb = w.matrix("token_embd.weight", hp.Dim, hp.VocabSize)
	m.outNorm = w.vector("output_norm.weight", hp.Dim)
	if _, ok := f.Tensor("output.weight"); ok {
		m.output[0] = w.matrix("output.weight", hp.Dim, hp.VocabSize)
	} else {
		m.output[0] = m.tokEmb // tied embeddings
	}
	qDim, kvDim := hp.Heads*hp.HeadDim, hp.KVHeads*hp.HeadDim
	m.layers = make([]layer, hp.Layers)
	for i := range m.layers {
		p := fmt.Sprintf("blk.%d.", i)
		l := &m.layers[i]
		l.attnNorm = w.vector(p+"attn_norm.weight", hp.Dim)
		l.qkv = [3]quant.Matrix{
			w.matrix(p+"attn_q.weight", hp.Dim, qDim),
			w.matrix(p+"attn_k.weight", hp.Dim, kvDim),
			w.matrix(p+"attn_v.weight", hp.Dim, kvDim),
		}
		l.wo[0] = w.matrix(p+"attn_output.weight", qDim, hp.Dim)
		if hp.Arch == ArchQwen2 {
			l.bq = w.vector(p+"attn_q.bias", qDim)
			l.bk = w.vector(p+"attn_k.bias", kvDim)
			l.bv = w.vector(p+"attn_v.bias", kvDim)
		}
		l.ffnNorm = w.vector(p+"ffn_norm.weight", hp.Dim)
		l.gateUp = [2]quant.Matrix{
			w.matrix(p+"ffn_gate.weight", hp.Dim, hp.FFN),
			w.matrix(p+"ffn_up.weight", hp.Dim, hp.FFN),
		}
		l.down[0] = w.matrix(p+"ffn_down.weight", hp.FFN, hp.Dim)
	}
	if _, ok := f.Tensor("rope_freqs.weight"); ok {
		m.ropeFactors = w.vector("rope_freqs.weight", hp.RopeDims/2)
	}
	if w.err != nil {
		return nil, w.err
	}

	if src, ok := f.String("tokenizer.chat_template"); ok {
		m.template, m.tmplErr = chat.Parse(src)
		if m.tmplErr != nil {
			log.Warn("chat template cannot be parsed; chat requests will fail", "err", m.tmplErr)
		}
	} else {
		m.template, m.tmplErr = chat.Parse("")
	}
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	m.pool = newPool(threads)
	log.Info("model loaded", "arch", hp.Arch, "name", hp.Name, "layers", hp.Layers, "dim", hp.Dim,
		"heads", hp.Heads, "kv_heads", hp.KVHeads, "vocab", hp.VocabSize, "context", hp.ContextLength,
		"weights", m.tokEmb.Type.String(), "threads", threads)
	return m, nil
}

// weightLoader collects the first error so the model's layout reads as a list.
type weightLoader struct {
	f   *gguf.File
	err error
}

func (w *weightLoader) tensor(name string, dims ...int) *gguf.TensorInfo {
	if w.err != nil {
		return nil
	}
	t, ok := w.f.Tensor(name)
	if !ok {
		w.err = fmt.Errorf("tensor %s is missing", name)
		return nil
	}
	if !slices.Equal(t.Dims, shape(dims)) {
		w.err = fmt.Errorf("tensor %s has shape %v, want %v", name, t.Dims, dims)
		return nil
	}
	if !t.Type.Supported() {
		w.err = fmt.Errorf("tensor %s has type %s, which is not supported", name, t.Type)
		return nil
	}
	return t
}

func (w *weightLoader) matrix(name string, cols, rows int) quant.Matrix {
	t := w.tensor(name, cols, rows)
	if t == nil {
		return quant.Matrix{}
	}
	m, err := quant.NewMatrix(t.Type, rows, cols, t.Data)
	if err != nil {
		w.err = fmt.Errorf("tensor %s: %w", name, err)
	}
	return m
}

func (w *weightLoader) vector(name string, n int) []float32 {
	t := w.tensor(name, n)
	if t == nil {
		return nil
	}
	out := make([]float32, n)
	if err := quant.Dequantize(t.Type, out, t.Data); err != nil {
		w.err = fmt.Errorf("tensor %s: %w", name, err)
	}
	return out
}

func shape(dims []int) []uint64 {
	out := make([]uint64, len(dims))
	for i, d := range dims {
		out[i] = uint64(d)
	}
	return out
}

// Close releases the worker threads and the file mapping. No session may be
// used after Close.
func (m *Model) Close() error {
	if m.pool != nil {
		m.pool.close()
		m.pool = nil
	}
	return m.file.Close()
}

// Hyperparameters returns the model's shape.
func (m *Model) Hyperparameters() Hyperparameters { return m.hp }

// Tokenizer returns the model's tokenizer.
func (m *Model) Tokenizer() *tokenizer.Tokenizer { return m.tok }

// ErrTemplate is wrapped when messages cannot be rendered into a prompt.
var ErrTemplate = errors.New("chat template")

// RenderChat renders messages with the model's chat template, or with the
// chat package's documented fallback when the file carries none.
func (m *Model) RenderChat(msgs []chat.Message) (string, error) {
	return m.RenderChatTools(msgs, nil)
}

// ToolFormat is how the model's chat template has it write tool calls.
func (m *Model) ToolFormat() chat.ToolFormat {
	if m.tmplErr != nil {
		return chat.ToolsNone
	}
	return m.template.ToolFormat()
}

// RenderChatTools is RenderChat with tools (OpenAI tool objects) in the
// template's tools variable.
func (m *Model) RenderChatTools(msgs []chat.Message, tools []json.RawMessage) (string, error) {
	if m.tmplErr != nil {
		return "", fmt.Errorf("%w of model %q: %w", ErrTemplate, m.hp.Name, m.tmplErr)
	}
	bos, eos := "", ""
	if id := m.tok.BOS(); id >= 0 {
		bos = m.tok.Token(id)
	}
	if id := m.tok.EOS(); id >= 0 {
		eos = m.tok.Token(id)
	}
	out, err := m.template.RenderTools(msgs, tools, true, bos, eos)
	if err != nil {
		return "", fmt.Errorf("%w of model %q: %w", ErrTemplate, m.hp.Name, err)
	}
	return out, nil
}
