package infer

import (
	"math"

	"github.com/rbee-dev/rbee/infer/quant"
	"github.com/rbee-dev/rbee/infer/vec"
)

// Work below these sizes runs on the calling thread alone: handing it out
// costs more than it saves. On a machine busy with other work (a worker's
// NATS traffic, the server beside it) the caller can spin for a
// descheduled thread for up to spinTime, so the bar sits at about 4 µs of
// AVX2 work: stories260K's prompt went from 1.7k to 28k tok/s under load
// and the 134M model's operations (590k MACs and up) are unaffected.
const (
	minMACsPerThread  = 1 << 17 // multiply-adds of a matrix product
	minHeadsPerThread = 2       // (token, head) pairs of attention
)

// cpuBackend runs the forward pass on the CPU: matrix products through the
// quant kernels, split by rows between the model's thread pool, with
// everything else done in place on host memory. Its KV storage holds every
// block of one engine's pool: block b, layer l, offset o at
// ((b*layers+l)*kvBlockTokens+o)*kvDim, rounded to F16 as ggml keeps it.
type cpuBackend struct {
	hp             Hyperparameters
	pool           *pool
	kvDim          int
	kStore, vStore []uint16

	act  quant.Activation
	mm   matMulOp
	attn attentionOp

	// RoPE as ggml computes it: theta starts at the position and is
	// multiplied by thetaScale per rotated pair, all in float32.
	thetaScale  float32
	freqScale   float32
	freqFactors []float32
	cos, sin    []float32 // scratch of one row's angles
}

func newCPUBackend(m *Model, kvBlocks, maxContext int) *cpuBackend {
	hp := m.hp
	kvDim := hp.KVHeads * hp.HeadDim
	b := &cpuBackend{
		hp: hp, pool: m.pool, kvDim: kvDim,
		// Made, not touched: the operating system maps the pages as blocks
		// are first written, so resident memory grows with the blocks used.
		kStore:      make([]uint16, kvBlocks*hp.Layers*kvBlockTokens*kvDim),
		vStore:      make([]uint16, kvBlocks*hp.Layers*kvBlockTokens*kvDim),
		thetaScale:  float32(math.Pow(float64(hp.RopeBase), float64(-2/float32(hp.RopeDims)))),
		freqScale:   hp.RopeScale,
		freqFactors: m.ropeFactors,
		cos:         make([]float32, hp.RopeDims/2),
		sin:         make([]float32, hp.RopeDims/2),
	}
	b.mm.act = &b.act
	b.attn = attentionOp{b: b, scores: make([][]float32, m.pool.threads), qh: make([][]float32, m.pool.threads)}
	for w := range m.pool.threads {
		b.attn.scores[w] = make([]float32, maxContext+8)
		b.attn.qh[w] = make([]float32, hp.HeadDim)
	}
	return b
}

func (b *cpuBackend) newTensor(rows, cols int) tensor {
	return tensor{rows: rows, cols: cols, host: make([]float32, rows*cols)}
}

func (b *cpuBackend) embed(dst tensor, emb quant.Matrix, tokens []int32) {
	for i, id := range tokens {
		quant.DequantizeRow(emb, int(id), dst.row(i))
	}
}

// rmsNorm follows ggml's rms_norm then mul: squares rounded to float32 and
// summed in float64, the mean and the scale in float32. The last bit of the
// scale matters: it decides which way the next activation quantisation
// rounds values that sit halfway between two steps.
func (b *cpuBackend) rmsNorm(dst, x tensor, w []float32, eps float32) {
	for r := range x.rows {
		xr, dr := x.row(r), dst.row(r)
		var ss float64
		for _, v := range xr {
			ss += float64(float32(v * v))
		}
		mean := float32(ss / float64(len(xr)))
		scale := 1 / float32(math.Sqrt(float64(mean+eps)))
		for i, v := range xr {
			dr[i] = float32(v*scale) * w[i]
		}
	}
}

// matMulOp is one or more products of the same prepared input, their rows
// laid end to end so one pass of the pool covers them all.
type matMulOp struct {
	dsts []tensor
	ws   []quant.Matrix
	act  *quant.Activation
}

func (o *matMulOp) runRows(lo, hi, _ int) {
	base := 0
	for i, w := range o.ws {
		if a, z := max(lo, base), min(hi, base+w.Rows); a < z {
			quant.MatMulRows(o.dsts[i].host, w, o.act, a-base, z-base)
		}
		base += w.Rows
	}
}

func (b *cpuBackend) matMul(dsts []tensor, ws []quant.Matrix, x tensor) {
	for len(ws) > 0 {
		// Shapes were checked at load, so preparing cannot fail.
		_ = b.act.PrepareBatch(ws[0].Type, x.host[:x.rows*x.cols], x.cols)
		n, rows := 1, ws[0].Rows
		for n < len(ws) && b.act.Serves(ws[n].Type) {
			rows += ws[n].Rows
			n++
		}
		b.mm.dsts, b.mm.ws = dsts[:n], ws[:n]
		b.pool.run(&b.mm, rows, minMACsPerThread/max(x.cols*x.rows, 1))
		b.mm.dsts, b.mm.ws = nil, nil
		dsts, ws = dsts[n:], ws[n:]
	}
}

func (b *cpuBackend) addBias(x tensor, bias []float32) {
	for r := range x.rows {
		vec.Add(x.row(r), bias)
	}
}

// rope rotates the first RopeDims dimensions of each head: adjacent pairs in
// llama's layout, or pairs half a rotation apart in NeoX's (qwen2).
func (b *cpuBackend) rope(x tensor, heads int, positions []int32) {
	hd, half := b.hp.HeadDim, b.hp.RopeDims/2
	for r, pos := range positions[:x.rows] {
		theta := float32(pos)
		for i := range half {
			t := theta
			if b.freqFactors != nil {
				t /= b.freqFactors[i]
			}
			t *= b.freqScale
			b.cos[i] = float32(math.Cos(float64(t)))
			b.sin[i] = float32(math.Sin(float64(t)))
			theta *= b.thetaScale
		}
		row := x.row(r)
		for h := range heads {
			v := row[h*hd : (h+1)*hd]
			for i := range half {
				a, c := 2*i, 2*i+1
				if b.hp.RopeNeoX {
					a, c = i, i+half
				}
				x0, x1 := v[a], v[c]
				v[a] = x0*b.cos[i] - x1*b.sin[i]
				v[c] = x0*b.sin[i] + x1*b.cos[i]
			}
		}
	}
}

// kvOffset is where position offset of block blk starts in layer's storage.
func (b *cpuBackend) kvOffset(blk int32, layer, offset int) int {
	return ((int(blk)*b.hp.Layers+layer)*kvBlockTokens + offset) * b.kvDim
}

func (b *cpuBackend) storeKV(layer int, k, v tensor, slots []int32) {
	for r, slot := range slots[:k.rows] {
		at := b.kvOffset(slot/kvBlockTokens, layer, int(slot%kvBlockTokens))
		vec.ToF16(b.kStore[at:at+b.kvDim], k.row(r))
		vec.ToF16(b.vStore[at:at+b.kvDim], v.row(r))
	}
}

func (b *cpuBackend) copyKVBlock(dst, src int32) {
	n := b.hp.Layers * kvBlockTokens * b.kvDim
	d, s := b.kvOffset(dst, 0, 0), b.kvOffset(src, 0, 0)
	copy(b.kStore[d:d+n], b.kStore[s:s+n])
	copy(b.vStore[d:d+n], b.vStore[s:s+n])
}

// attentionOp runs grouped-query attention for a range of (token, head)
// pairs. Each pair reads only its own query and its sequence's cache, and
// sums in a fixed order, so its result does not depend on the batch.
type attentionOp struct {
	b      *cpuBackend
	out, q tensor
	layer  int
	l      *stepLayout
	scores [][]float32 // per thread, one context of scores
	qh     [][]float32 // per thread, one head's query rounded to F16
}

func (o *attentionOp) runRows(lo, hi, worker int) {
	b, hp := o.b, o.b.hp
	hd := hp.HeadDim
	group := hp.Heads / hp.KVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	scores, qh := o.scores[worker], o.qh[worker]
	for u := lo; u < hi; u++ {
		t, h := u/hp.Heads, u%hp.Heads
		n := int(o.l.positions[t]) + 1
		blocks := o.l.blocks[o.l.seqOf[t]]
		kvOff := (h / group) * hd
		// Like ggml with an F16 cache, queries and attention weights are
		// rounded to F16 before they meet the cached keys and values.
		vec.RoundF16(qh, o.q.row(t)[h*hd:(h+1)*hd])
		sc := scores[:n]
		for j := 0; j*kvBlockTokens < n; j++ {
			m := min(kvBlockTokens, n-j*kvBlockTokens)
			at := b.kvOffset(blocks[j], o.layer, 0) + kvOff
			vec.DotsF16(sc[j*kvBlockTokens:j*kvBlockTokens+m], qh, b.kStore[at:], b.kvDim)
		}
		vec.Scale(sc, scale)
		// ggml's row of scores runs over the whole (padded) cache, masked
		// with -Inf, so every score of ours lies in a full group of 8 of its
		// vectorised exp: pad the same way.
		padded := scores[:(n+7)&^7]
		for i := n; i < len(padded); i++ {
			padded[i] = float32(math.Inf(-1))
		}
		vec.Softmax(padded)
		vec.RoundF16(sc, sc)
		out := o.out.row(t)[h*hd : (h+1)*hd]
		clear(out)
		for j := 0; j*kvBlockTokens < n; j++ {
			m := min(kvBlockTokens, n-j*kvBlockTokens)
			at := b.kvOffset(blocks[j], o.layer, 0) + kvOff
			vec.AxpysF16(out, sc[j*kvBlockTokens:j*kvBlockTokens+m], b.vStore[at:], b.kvDim)
		}
	}
}

func (b *cpuBackend) attention(out, q tensor, layer int, l *stepLayout) {
	o := &b.attn
	o.out, o.q, o.layer, o.l = out, q, layer, l
	// Each (token, head) pair reads every position up to its own, twice.
	positions := 0
	for _, p := range l.positions[:q.rows] {
		positions += int(p) + 1
	}
	macs := max(2*positions*b.hp.HeadDim, 1)
	b.pool.run(o, q.rows*b.hp.Heads, minMACsPerThread*q.rows/macs)
	o.l = nil
}

// swiGLU runs row by row, as ggml does: a row's last len%8 elements take the
// scalar exp, so running a whole batch as one vector would make a token's
// result depend on the batch.
func (b *cpuBackend) swiGLU(gate, up tensor) {
	for r := range gate.rows {
		vec.SwiGLU(gate.row(r), up.row(r))
	}
}

func (b *cpuBackend) add(dst, src tensor) {
	vec.Add(dst.host[:dst.rows*dst.cols], src.host[:src.rows*src.cols])
}

func (b *cpuBackend) gather(dst, src tensor, rows []int32) {
	for i, r := range rows {
		copy(dst.row(i), src.row(int(r)))
	}
}

func (b *cpuBackend) readRow(dst []float32, src tensor, row int) {
	copy(dst, src.row(row))
}
