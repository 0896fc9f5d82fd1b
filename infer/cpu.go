package infer

import (
	"math"

	"github.com/rbee-dev/rbee/infer/quant"
)

// Work below these sizes runs on the calling thread alone: handing it out
// costs more than it saves.
const (
	minMACsPerThread  = 1 << 15 // multiply-adds of a matrix product
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
		b.attn.scores[w] = make([]float32, maxContext)
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
		addTo(x.row(r), bias)
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
		toF16(b.kStore[at:at+b.kvDim], k.row(r))
		toF16(b.vStore[at:at+b.kvDim], v.row(r))
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
		roundF16(qh, o.q.row(t)[h*hd:(h+1)*hd])
		sc := scores[:n]
		for j := 0; j*kvBlockTokens < n; j++ {
			m := min(kvBlockTokens, n-j*kvBlockTokens)
			at := b.kvOffset(blocks[j], o.layer, 0) + kvOff
			dotsF16(sc[j*kvBlockTokens:j*kvBlockTokens+m], qh, b.kStore[at:], b.kvDim)
		}
		for i := range sc {
			sc[i] *= scale
		}
		softmax(sc)
		roundF16(sc, sc)
		out := o.out.row(t)[h*hd : (h+1)*hd]
		clear(out)
		for j := 0; j*kvBlockTokens < n; j++ {
			m := min(kvBlockTokens, n-j*kvBlockTokens)
			at := b.kvOffset(blocks[j], o.layer, 0) + kvOff
			axpysF16(out, sc[j*kvBlockTokens:j*kvBlockTokens+m], b.vStore[at:], b.kvDim)
		}
	}
}

func (b *cpuBackend) attention(out, q tensor, layer int, l *stepLayout) {
	o := &b.attn
	o.out, o.q, o.layer, o.l = out, q, layer, l
	b.pool.run(o, q.rows*b.hp.Heads, minHeadsPerThread)
	o.l = nil
}

func (b *cpuBackend) swiGLU(gate, up tensor) {
	swiGLU(gate.host[:gate.rows*gate.cols], up.host[:up.rows*up.cols])
}

func (b *cpuBackend) add(dst, src tensor) {
	addTo(dst.host[:dst.rows*dst.cols], src.host[:src.rows*src.cols])
}

func (b *cpuBackend) gather(dst, src tensor, rows []int32) {
	for i, r := range rows {
		copy(dst.row(i), src.row(int(r)))
	}
}

func (b *cpuBackend) readRow(dst []float32, src tensor, row int) {
	copy(dst, src.row(row))
}

func softmax(x []float32) {
	maxV := x[0]
	for _, v := range x[1:] {
		maxV = max(maxV, v)
	}
	var sum float64
	for i, v := range x {
		e := float32(math.Exp(float64(v - maxV)))
		x[i] = e
		sum += float64(e)
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}

func swiGLU(gate, up []float32) {
	for i, g := range gate {
		gate[i] = g / (1 + float32(math.Exp(float64(-g)))) * up[i]
	}
}

func addTo(dst, src []float32) {
	for i, v := range src {
		dst[i] += v
	}
}

func toF16(dst []uint16, src []float32) {
	for i, v := range src {
		dst[i] = quant.F32ToF16(v)
	}
}

func roundF16(dst, src []float32) {
	for i, v := range src {
		dst[i] = quant.F16ToF32(quant.F32ToF16(v))
	}
}

// dotsF16 computes dst[t] = q · k[t*stride:][:len(q)].
func dotsF16(dst, q []float32, k []uint16, stride int) {
	for t := range dst {
		row := k[t*stride : t*stride+len(q)]
		var s0, s1 float32
		i := 0
		for ; i+2 <= len(q); i += 2 {
			s0 += q[i] * quant.F16ToF32(row[i])
			s1 += q[i+1] * quant.F16ToF32(row[i+1])
		}
		for ; i < len(q); i++ {
			s0 += q[i] * quant.F16ToF32(row[i])
		}
		dst[t] = s0 + s1
	}
}

// axpysF16 adds p[t] * v[t*stride:][:len(out)] to out for each t in order.
func axpysF16(out, p []float32, v []uint16, stride int) {
	for t, a := range p {
		row := v[t*stride : t*stride+len(out)]
		for i, x := range row {
			out[i] += a * quant.F16ToF32(x)
		}
	}
}
