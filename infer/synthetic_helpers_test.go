package infer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/infer/quant"
)

// synthSpec describes a small model with random weights, written with the
// GGUF writer so that tests need no model files.
type synthSpec struct {
	arch                          string // ArchLlama or ArchQwen2
	dim, ffn, layers, heads, kvHs int
	ropeBase                      float32 // 0: the key is left out (engine default 10000)
	ropeLinear                    float32 // linear rope scaling factor; 0: no scaling keys
	tied                          bool    // no output.weight: logits use token_embd
	biases                        bool    // attn_q/k/v biases (qwen2)
	seed                          uint64
}

const synthEps = 1e-5

// synthTensor is one tensor as float32. Matrices are rows x cols with cols
// the row length (ggml's dims[0]); vectors have rows 0.
type synthTensor struct {
	name       string
	rows, cols int
	data       []float32
}

func (t synthTensor) matrix() bool { return t.rows > 0 }

type synthModel struct {
	spec    synthSpec
	vocab   []string
	tensors []synthTensor
	index   map[string]int
}

// synthWords are the normal (non-byte) tokens of the synthetic vocabulary.
var synthWords = []string{
	"▁", "▁once", "▁upon", "▁a", "▁time", "▁there", "▁was", "▁little", "▁cat",
	"▁dog", "▁sat", "▁on", "▁the", "▁mat", "▁and", "▁ran", "▁away", "▁home", "e", "s",
}

// synthVocab is a SentencePiece vocabulary: <unk>, <s>, </s>, the 256 byte
// tokens so that any text encodes, and a few words.
func synthVocab() (tokens []string, scores []float32, types []int32) {
	tokens = []string{"<unk>", "<s>", "</s>"}
	scores = []float32{0, 0, 0}
	types = []int32{2, 3, 3} // unknown, control, control
	for b := range 256 {
		tokens = append(tokens, fmt.Sprintf("<0x%02X>", b))
		scores = append(scores, 0)
		types = append(types, 6) // byte
	}
	for i, w := range synthWords {
		tokens = append(tokens, w)
		scores = append(scores, -float32(i+1))
		types = append(types, 1) // normal
	}
	return tokens, scores, types
}

// newSynthModel draws every weight from a PRNG seeded with spec.seed.
// Matrices are normal with standard deviation gain/sqrt(cols), so that
// activations stay of order one through the layers; the gains make
// attention reasonably sharp and spread the logits over a few units.
func newSynthModel(spec synthSpec) *synthModel {
	rng := rand.New(rand.NewPCG(spec.seed, 0x9e3779b97f4a7c15))
	vocab, _, _ := synthVocab()
	m := &synthModel{spec: spec, vocab: vocab, index: map[string]int{}}
	hd := spec.dim / spec.heads
	qDim, kvDim := spec.heads*hd, spec.kvHs*hd
	normal := func(n int, mean, std float64) []float32 {
		out := make([]float32, n)
		for i := range out {
			out[i] = float32(mean + std*rng.NormFloat64())
		}
		return out
	}
	mat := func(name string, rows, cols int, gain float64) {
		m.add(synthTensor{name: name, rows: rows, cols: cols, data: normal(rows*cols, 0, gain/math.Sqrt(float64(cols)))})
	}
	vec := func(name string, n int, mean, std float64) {
		m.add(synthTensor{name: name, cols: n, data: normal(n, mean, std)})
	}
	m.add(synthTensor{name: "token_embd.weight", rows: len(vocab), cols: spec.dim, data: normal(len(vocab)*spec.dim, 0, 1)})
	vec("output_norm.weight", spec.dim, 1, 0.1)
	if !spec.tied {
		mat("output.weight", len(vocab), spec.dim, 3)
	}
	for l := range spec.layers {
		p := fmt.Sprintf("blk.%d.", l)
		vec(p+"attn_norm.weight", spec.dim, 1, 0.1)
		mat(p+"attn_q.weight", qDim, spec.dim, 1.5)
		mat(p+"attn_k.weight", kvDim, spec.dim, 1.5)
		mat(p+"attn_v.weight", kvDim, spec.dim, 1)
		if spec.biases {
			vec(p+"attn_q.bias", qDim, 0, 0.5)
			vec(p+"attn_k.bias", kvDim, 0, 0.5)
			vec(p+"attn_v.bias", kvDim, 0, 0.5)
		}
		mat(p+"attn_output.weight", spec.dim, qDim, 1)
		vec(p+"ffn_norm.weight", spec.dim, 1, 0.1)
		mat(p+"ffn_gate.weight", spec.ffn, spec.dim, 1)
		mat(p+"ffn_up.weight", spec.ffn, spec.dim, 1)
		mat(p+"ffn_down.weight", spec.dim, spec.ffn, 1)
	}
	return m
}

func (m *synthModel) add(t synthTensor) {
	m.index[t.name] = len(m.tensors)
	m.tensors = append(m.tensors, t)
}

func (m *synthModel) tensor(name string) synthTensor { return m.tensors[m.index[name]] }

// roundTrip returns a copy whose matrices hold what quantising them to typ
// and dequantising gives: the weights a correct typ kernel computes with.
func (m *synthModel) roundTrip(t *testing.T, typ quant.Type) *synthModel {
	t.Helper()
	out := &synthModel{spec: m.spec, vocab: m.vocab, index: m.index}
	for _, st := range m.tensors {
		if st.matrix() {
			q := quantizeTensor(t, typ, st.data)
			deq := make([]float32, len(st.data))
			if err := quant.Dequantize(typ, deq, q); err != nil {
				t.Fatalf("dequantize %s: %v", st.name, err)
			}
			st.data = deq
		}
		out.tensors = append(out.tensors, st)
	}
	return out
}

func quantizeTensor(t *testing.T, typ quant.Type, data []float32) []byte {
	t.Helper()
	n, err := quant.RowBytes(typ, len(data))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, n)
	if err := quant.Quantize(typ, buf, data); err != nil {
		t.Fatal(err)
	}
	return buf
}

// write stores the model with its matrices as typ (vectors stay F32) in a
// file under t.TempDir and returns the path.
func (m *synthModel) write(t *testing.T, typ quant.Type) string {
	t.Helper()
	s := m.spec
	w := gguf.NewWriter()
	tokens, scores, types := synthVocab()
	a := s.arch + "."
	set := func(key string, v any) {
		if err := w.Set(key, v); err != nil {
			t.Fatal(err)
		}
	}
	set("general.architecture", s.arch)
	set("general.name", "synthetic "+s.arch)
	set(a+"context_length", uint32(256))
	set(a+"embedding_length", uint32(s.dim))
	set(a+"block_count", uint32(s.layers))
	set(a+"feed_forward_length", uint32(s.ffn))
	set(a+"attention.head_count", uint32(s.heads))
	set(a+"attention.head_count_kv", uint32(s.kvHs))
	set(a+"attention.layer_norm_rms_epsilon", float32(synthEps))
	if s.ropeBase != 0 {
		set(a+"rope.freq_base", s.ropeBase)
	}
	if s.ropeLinear != 0 {
		set(a+"rope.scaling.type", "linear")
		set(a+"rope.scaling.factor", s.ropeLinear)
	}
	set("tokenizer.ggml.model", "llama")
	set("tokenizer.ggml.tokens", tokens)
	set("tokenizer.ggml.scores", scores)
	set("tokenizer.ggml.token_type", types)
	set("tokenizer.ggml.bos_token_id", uint32(1))
	set("tokenizer.ggml.eos_token_id", uint32(2))
	set("tokenizer.ggml.unknown_token_id", uint32(0))
	for _, st := range m.tensors {
		var err error
		if st.matrix() {
			err = w.AddTensor(st.name, typ, []uint64{uint64(st.cols), uint64(st.rows)}, quantizeTensor(t, typ, st.data))
		} else {
			err = w.AddTensor(st.name, quant.F32, []uint64{uint64(st.cols)}, quantizeTensor(t, quant.F32, st.data))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), fmt.Sprintf("synthetic-%s-%s.gguf", s.arch, typ))
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(fh); err != nil {
		fh.Close()
		t.Fatal(err)
	}
	if err := fh.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// load writes the model as typ and loads it with the engine.
func (m *synthModel) load(t *testing.T, typ quant.Type) *Model {
	t.Helper()
	model, err := Load(m.write(t, typ), Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { model.Close() })
	return model
}

// engineLogits runs tokens through a fresh engine, one per step, and
// returns the logits after each one.
func engineLogits(t *testing.T, m *Model, tokens []int32) [][]float32 {
	t.Helper()
	return forwardLogits(t, m, tokens, 1)
}

// relDiff is max |a-b| / max |b| over one step's logits.
func relDiff[A, B float32 | float64](a []A, b []B) float64 {
	var worst, scale float64
	for i := range b {
		worst = max(worst, math.Abs(float64(a[i])-float64(b[i])))
		scale = max(scale, math.Abs(float64(b[i])))
	}
	return worst / scale
}

// worstRelDiff is the largest relDiff over all steps.
func worstRelDiff[A, B float32 | float64](a [][]A, b [][]B) float64 {
	worst := 0.0
	for i := range b {
		worst = max(worst, relDiff(a[i], b[i]))
	}
	return worst
}

// rmsRelDiff is rms(a-b) / rms(b) over all steps' logits.
func rmsRelDiff(a, b [][]float32) float64 {
	var num, den float64
	for i := range b {
		for j := range b[i] {
			d := float64(a[i][j]) - float64(b[i][j])
			num += d * d
			den += float64(b[i][j]) * float64(b[i][j])
		}
	}
	return math.Sqrt(num / den)
}

// synthTokens is a fixed token sequence: BOS, words and byte tokens.
func synthTokens(n int) []int32 {
	rng := rand.New(rand.NewPCG(7, 11))
	out := []int32{1}
	for len(out) < n {
		out = append(out, int32(3+rng.IntN(256+len(synthWords))))
	}
	return out
}

// refOptions are the RoPE conventions the float64 reference applies; the
// tests also run it with wrong ones to show that a mistake would be seen.
type refOptions struct {
	neox     bool    // rotate (i, i+d/2) pairs, else (2i, 2i+1)
	base     float64 // theta base
	posScale float64 // positions are multiplied by this (1/linear factor)
}

// referenceLogits is a plain float64 forward pass of the synthetic model,
// written from the architecture's definition rather than from the engine:
// RMSNorm, Q/K/V (+bias), RoPE, grouped-query causal attention, output
// projection, SwiGLU feed-forward, residuals, final norm and the output (or
// tied embedding) projection. It keeps the whole K/V history in float64.
func referenceLogits(m *synthModel, tokens []int32, o refOptions) [][]float64 {
	logits, _ := referenceStates(m, tokens, o)
	return logits
}

// referenceStates is referenceLogits that also returns each position's
// final hidden state: after the final norm, before the output projection.
func referenceStates(m *synthModel, tokens []int32, o refOptions) (logits, hidden [][]float64) {
	s := m.spec
	hd := s.dim / s.heads
	group := s.heads / s.kvHs
	mats := map[string][][]float64{}
	w := func(name string) [][]float64 {
		if a, ok := mats[name]; ok {
			return a
		}
		st := m.tensor(name)
		out := make([][]float64, st.rows)
		mats[name] = out
		for r := range out {
			out[r] = make([]float64, st.cols)
			for c := range out[r] {
				out[r][c] = float64(st.data[r*st.cols+c])
			}
		}
		return out
	}
	v := func(name string) []float64 {
		st := m.tensor(name)
		out := make([]float64, len(st.data))
		for i, x := range st.data {
			out[i] = float64(x)
		}
		return out
	}
	matVec := func(a [][]float64, x []float64) []float64 {
		out := make([]float64, len(a))
		for r, row := range a {
			for c, wv := range row {
				out[r] += wv * x[c]
			}
		}
		return out
	}
	norm := func(x, g []float64) []float64 {
		ss := 0.0
		for _, e := range x {
			ss += e * e
		}
		k := 1 / math.Sqrt(ss/float64(len(x))+synthEps)
		out := make([]float64, len(x))
		for i := range x {
			out[i] = x[i] * k * g[i]
		}
		return out
	}
	ropeHead := func(x []float64, pos int) {
		for i := range hd / 2 {
			theta := float64(pos) * o.posScale * math.Pow(o.base, -2*float64(i)/float64(hd))
			a, b := 2*i, 2*i+1
			if o.neox {
				a, b = i, i+hd/2
			}
			c, sn := math.Cos(theta), math.Sin(theta)
			x[a], x[b] = x[a]*c-x[b]*sn, x[a]*sn+x[b]*c
		}
	}

	emb := w("token_embd.weight")
	out := emb
	if !s.tied {
		out = w("output.weight")
	}
	keys := make([][][]float64, s.layers) // layer, position, kvDim
	vals := make([][][]float64, s.layers)
	logits, hidden = make([][]float64, len(tokens)), make([][]float64, len(tokens))
	for pos, tok := range tokens {
		x := append([]float64(nil), emb[tok]...)
		for l := range s.layers {
			p := fmt.Sprintf("blk.%d.", l)
			h := norm(x, v(p+"attn_norm.weight"))
			q, k, vv := matVec(w(p+"attn_q.weight"), h), matVec(w(p+"attn_k.weight"), h), matVec(w(p+"attn_v.weight"), h)
			if s.biases {
				for i, b := range v(p + "attn_q.bias") {
					q[i] += b
				}
				for i, b := range v(p + "attn_k.bias") {
					k[i] += b
				}
				for i, b := range v(p + "attn_v.bias") {
					vv[i] += b
				}
			}
			for hh := range s.heads {
				ropeHead(q[hh*hd:(hh+1)*hd], pos)
			}
			for hh := range s.kvHs {
				ropeHead(k[hh*hd:(hh+1)*hd], pos)
			}
			keys[l] = append(keys[l], k)
			vals[l] = append(vals[l], vv)
			att := make([]float64, s.heads*hd)
			for hh := range s.heads {
				kh := hh / group // query heads share kv heads in consecutive groups
				qh := q[hh*hd : (hh+1)*hd]
				scores := make([]float64, pos+1)
				top := math.Inf(-1)
				for t := range scores {
					d := 0.0
					for i := range hd {
						d += qh[i] * keys[l][t][kh*hd+i]
					}
					scores[t] = d / math.Sqrt(float64(hd))
					top = max(top, scores[t])
				}
				sum := 0.0
				for t := range scores {
					scores[t] = math.Exp(scores[t] - top)
					sum += scores[t]
				}
				for t := range scores {
					for i := range hd {
						att[hh*hd+i] += scores[t] / sum * vals[l][t][kh*hd+i]
					}
				}
			}
			for i, e := range matVec(w(p+"attn_output.weight"), att) {
				x[i] += e
			}
			h = norm(x, v(p+"ffn_norm.weight"))
			g, u := matVec(w(p+"ffn_gate.weight"), h), matVec(w(p+"ffn_up.weight"), h)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			for i, e := range matVec(w(p+"ffn_down.weight"), g) {
				x[i] += e
			}
		}
		hidden[pos] = norm(x, v("output_norm.weight"))
		logits[pos] = matVec(out, hidden[pos])
	}
	return logits, hidden
}
