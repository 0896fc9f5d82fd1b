package infer

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"github.com/rbee-dev/rbee/infer/quant"
)

// ErrContextExceeded is returned when a prompt does not fit the session's
// context.
var ErrContextExceeded = errors.New("context length exceeded")

// Session is one conversation's state: its KV cache and scratch buffers. A
// session is used by one goroutine at a time; make one per concurrent
// request. Everything is allocated up front, so decoding allocates nothing.
type Session struct {
	m       *Model
	ctxLen  int
	kCache  [][]uint16 // per layer: ctxLen rows of KVHeads*HeadDim, as F16
	vCache  [][]uint16
	cached  []int32 // tokens whose keys and values are in the cache
	x, xb   []float32
	xb2     []float32
	q, k, v []float32
	hb, hb2 []float32
	logits  []float32
	cos     []float32
	sin     []float32
	act     quant.Activation
	mv      matvecOp
	attn    attentionOp
	done    sync.WaitGroup
}

// NewSession makes a session with room for ctxLen tokens. ctxLen may exceed
// the length the model was trained for; quality past it is not promised.
func (m *Model) NewSession(ctxLen int) (*Session, error) {
	hp := m.hp
	if ctxLen <= 0 {
		ctxLen = hp.ContextLength
	}
	if ctxLen > 1<<20 {
		return nil, fmt.Errorf("context %d is larger than the limit %d", ctxLen, 1<<20)
	}
	if ctxLen > hp.ContextLength {
		m.log.Warn("context is longer than the model was trained for", "context", ctxLen, "trained", hp.ContextLength)
	}
	kvDim := hp.KVHeads * hp.HeadDim
	qDim := hp.Heads * hp.HeadDim
	s := &Session{
		m: m, ctxLen: ctxLen,
		kCache: make([][]uint16, hp.Layers), vCache: make([][]uint16, hp.Layers),
		cached: make([]int32, 0, ctxLen),
		x:      make([]float32, hp.Dim), xb: make([]float32, hp.Dim), xb2: make([]float32, qDim),
		q: make([]float32, qDim), k: make([]float32, kvDim), v: make([]float32, kvDim),
		hb: make([]float32, hp.FFN), hb2: make([]float32, hp.FFN),
		logits: make([]float32, hp.VocabSize),
		cos:    make([]float32, hp.RopeDims/2), sin: make([]float32, hp.RopeDims/2),
	}
	for l := range hp.Layers {
		s.kCache[l] = make([]uint16, ctxLen*kvDim)
		s.vCache[l] = make([]uint16, ctxLen*kvDim)
	}
	s.attn = attentionOp{s: s, scores: make([]float32, hp.Heads*ctxLen), qh: make([]float32, qDim)}
	return s, nil
}

// ContextLength is the number of tokens the session can hold.
func (s *Session) ContextLength() int { return s.ctxLen }

// Reset forgets the cached tokens.
func (s *Session) Reset() { s.cached = s.cached[:0] }

// reuse keeps the longest cached prefix of tokens, leaving at least the last
// token to evaluate, and returns how many tokens are kept.
func (s *Session) reuse(tokens []int32) int {
	n := 0
	for n < len(s.cached) && n < len(tokens)-1 && s.cached[n] == tokens[n] {
		n++
	}
	s.cached = s.cached[:n]
	return n
}

type matvecOp struct {
	dst []float32
	w   quant.Matrix
	act *quant.Activation
}

func (o *matvecOp) runRows(lo, hi int) { quant.MatVecRows(o.dst, o.w, o.act, lo, hi) }

// matmul computes dst = w·x. sameInput says x is the vector of the previous
// matmul, unchanged: q, k and v read one input, and so do gate and up, so
// the activation is prepared once when their weight types share a format.
func (s *Session) matmul(dst []float32, w quant.Matrix, x []float32, sameInput bool) {
	if !sameInput || !s.act.Serves(w.Type) {
		// Shapes were checked at load, so Prepare cannot fail here.
		_ = s.act.Prepare(w.Type, x)
	}
	s.mv = matvecOp{dst: dst, w: w, act: &s.act}
	s.m.pool.run(&s.mv, w.Rows, &s.done)
}

// forward runs one token at position len(s.cached) through the model,
// appends its keys and values to the cache and leaves the logits in
// s.logits.
func (s *Session) forward(token int32) error {
	m, hp := s.m, s.m.hp
	pos := len(s.cached)
	if pos >= s.ctxLen {
		return fmt.Errorf("%w: position %d, context %d", ErrContextExceeded, pos, s.ctxLen)
	}
	if token < 0 || int(token) >= hp.VocabSize {
		return fmt.Errorf("token %d is outside the vocabulary of %d", token, hp.VocabSize)
	}
	quant.DequantizeRow(m.tokEmb, int(token), s.x)
	ropeAngles(s.cos, s.sin, m.invFreq, pos)
	kvDim := hp.KVHeads * hp.HeadDim

	for li := range m.layers {
		l := &m.layers[li]
		rmsNorm(s.xb, s.x, l.attnNorm, hp.NormEps)
		s.matmul(s.q, l.wq, s.xb, false)
		s.matmul(s.k, l.wk, s.xb, true)
		s.matmul(s.v, l.wv, s.xb, true)
		if l.bq != nil {
			addTo(s.q, l.bq)
			addTo(s.k, l.bk)
			addTo(s.v, l.bv)
		}
		rope(s.q, hp.Heads, hp.HeadDim, s.cos, s.sin, hp.RopeNeoX)
		rope(s.k, hp.KVHeads, hp.HeadDim, s.cos, s.sin, hp.RopeNeoX)
		toF16(s.kCache[li][pos*kvDim:(pos+1)*kvDim], s.k)
		toF16(s.vCache[li][pos*kvDim:(pos+1)*kvDim], s.v)

		s.attn.layer, s.attn.pos = li, pos
		s.m.pool.run(&s.attn, hp.Heads, &s.done)
		s.matmul(s.xb, l.wo, s.xb2, false)
		addTo(s.x, s.xb)

		rmsNorm(s.xb, s.x, l.ffnNorm, hp.NormEps)
		s.matmul(s.hb, l.gate, s.xb, false)
		s.matmul(s.hb2, l.up, s.xb, true)
		swiGLU(s.hb, s.hb2)
		s.matmul(s.xb, l.down, s.hb, false)
		addTo(s.x, s.xb)
	}
	rmsNorm(s.x, s.x, m.outNorm, hp.NormEps)
	s.matmul(s.logits, m.output, s.x, false)
	s.cached = append(s.cached, token)
	return nil
}

// attentionOp runs grouped-query attention for a range of query heads.
type attentionOp struct {
	s          *Session
	layer, pos int
	scores     []float32 // Heads rows of ctxLen
	qh         []float32 // Heads rows of HeadDim: queries rounded to F16
}

func (o *attentionOp) runRows(lo, hi int) {
	s, hp := o.s, o.s.m.hp
	hd := hp.HeadDim
	kvDim := hp.KVHeads * hd
	group := hp.Heads / hp.KVHeads
	scale := float32(1 / math.Sqrt(float64(hd)))
	kc, vc := s.kCache[o.layer], s.vCache[o.layer]
	n := o.pos + 1
	for h := lo; h < hi; h++ {
		// Like ggml with an F16 cache, queries and attention weights are
		// rounded to F16 before they meet the cached keys and values.
		q := o.qh[h*hd : (h+1)*hd]
		roundF16(q, s.q[h*hd:(h+1)*hd])
		kvOff := (h / group) * hd
		sc := o.scores[h*s.ctxLen : h*s.ctxLen+n]
		for t := range n {
			sc[t] = dotF16(q, kc[t*kvDim+kvOff:t*kvDim+kvOff+hd]) * scale
		}
		softmax(sc)
		roundF16(sc, sc)
		out := s.xb2[h*hd : (h+1)*hd]
		clear(out)
		for t := range n {
			axpyF16(out, sc[t], vc[t*kvDim+kvOff:t*kvDim+kvOff+hd])
		}
	}
}

func ropeFrequencies(hp Hyperparameters, factors []float32) []float64 {
	inv := make([]float64, hp.RopeDims/2)
	for i := range inv {
		inv[i] = float64(hp.RopeScale) * math.Pow(float64(hp.RopeBase), -2*float64(i)/float64(hp.RopeDims))
		if factors != nil && factors[i] > 0 {
			inv[i] /= float64(factors[i])
		}
	}
	return inv
}

func ropeAngles(cos, sin []float32, invFreq []float64, pos int) {
	for i, f := range invFreq {
		c, s := math.Cos(float64(pos)*f), math.Sin(float64(pos)*f)
		cos[i], sin[i] = float32(c), float32(s)
	}
}

// rope rotates the first 2*len(cos) dimensions of each head: adjacent pairs
// in llama's layout, or pairs half a rotation apart in NeoX's (qwen2).
func rope(x []float32, heads, headDim int, cos, sin []float32, neox bool) {
	half := len(cos)
	for h := range heads {
		v := x[h*headDim : (h+1)*headDim]
		for i := range half {
			a, b := 2*i, 2*i+1
			if neox {
				a, b = i, i+half
			}
			x0, x1 := v[a], v[b]
			v[a] = x0*cos[i] - x1*sin[i]
			v[b] = x0*sin[i] + x1*cos[i]
		}
	}
}

// rmsNorm follows ggml's rms_norm then mul: squares rounded to float32 and summed in float64, the
// mean and the scale in float32. The last bit of the scale matters: it decides which way the next
// activation quantisation rounds values that sit halfway between two steps.
func rmsNorm(dst, x, w []float32, eps float32) {
	var ss float64
	for _, v := range x {
		ss += float64(float32(v * v))
	}
	mean := float32(ss / float64(len(x)))
	scale := 1 / float32(math.Sqrt(float64(mean+eps)))
	for i, v := range x {
		dst[i] = float32(v*scale) * w[i]
	}
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

func dotF16(a []float32, b []uint16) float32 {
	var s0, s1 float32
	i := 0
	for ; i+2 <= len(a); i += 2 {
		s0 += a[i] * quant.F16ToF32(b[i])
		s1 += a[i+1] * quant.F16ToF32(b[i+1])
	}
	for ; i < len(a); i++ {
		s0 += a[i] * quant.F16ToF32(b[i])
	}
	return s0 + s1
}

func axpyF16(dst []float32, a float32, x []uint16) {
	for i, v := range x {
		dst[i] += a * quant.F16ToF32(v)
	}
}
