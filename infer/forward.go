package infer

import "github.com/rbee-dev/rbee/infer/quant"

// activations are an engine's scratch tensors, sized for its largest step.
type activations struct {
	x, xb, q, k, v, att, hb, hb2 tensor // one row per token of the step
	last                         tensor // one row per sequence whose logits are wanted
	logits                       tensor

	// Argument lists of the fused products, kept here so that passing
	// them to the backend allocates nothing.
	qkvOut    [3]tensor
	gateUpOut [2]tensor
	oneOut    [1]tensor
}

func newActivations(b backend, hp Hyperparameters, tokens, seqs int) activations {
	qDim, kvDim := hp.Heads*hp.HeadDim, hp.KVHeads*hp.HeadDim
	return activations{
		x: b.newTensor(tokens, hp.Dim), xb: b.newTensor(tokens, hp.Dim),
		q: b.newTensor(tokens, qDim), k: b.newTensor(tokens, kvDim), v: b.newTensor(tokens, kvDim),
		att: b.newTensor(tokens, qDim),
		hb:  b.newTensor(tokens, hp.FFN), hb2: b.newTensor(tokens, hp.FFN),
		last: b.newTensor(seqs, hp.Dim), logits: b.newTensor(seqs, hp.VocabSize),
	}
}

// forward is the model's recipe: it runs the tokens of one step through
// every layer, storing their keys and values, and leaves in a.logits one
// row per entry of l.logitRows.
func (m *Model) forward(b backend, a *activations, l *stepLayout) {
	x := m.layersForward(b, a, l)
	last := a.last.view(len(l.logitRows))
	b.gather(last, x, l.logitRows)
	b.rmsNorm(last, last, m.outNorm, m.hp.NormEps)
	a.oneOut[0] = a.logits.view(len(l.logitRows))
	b.matMul(a.oneOut[:], m.output[:], last)
}

// layersForward runs the step's tokens through every layer and returns
// their hidden states, one row per token, before the final norm.
func (m *Model) layersForward(b backend, a *activations, l *stepLayout) tensor {
	hp := m.hp
	n := len(l.tokens)
	x, xb, att := a.x.view(n), a.xb.view(n), a.att.view(n)
	q, k, v := a.q.view(n), a.k.view(n), a.v.view(n)
	hb, hb2 := a.hb.view(n), a.hb2.view(n)
	a.qkvOut = [3]tensor{q, k, v}
	a.gateUpOut = [2]tensor{hb, hb2}

	b.embed(x, m.tokEmb, l.tokens)
	for li := range m.layers {
		ly := &m.layers[li]
		b.rmsNorm(xb, x, ly.attnNorm, hp.NormEps)
		b.matMul(a.qkvOut[:], ly.qkv[:], xb)
		if ly.bq != nil {
			b.addBias(q, ly.bq)
			b.addBias(k, ly.bk)
			b.addBias(v, ly.bv)
		}
		b.rope(q, hp.Heads, l.positions)
		b.rope(k, hp.KVHeads, l.positions)
		b.storeKV(li, k, v, l.slots)
		b.attention(att, q, li, l)
		a.oneOut[0] = xb
		b.matMul(a.oneOut[:], ly.wo[:], att)
		b.add(x, xb)

		b.rmsNorm(xb, x, ly.ffnNorm, hp.NormEps)
		b.matMul(a.gateUpOut[:], ly.gateUp[:], xb)
		b.swiGLU(hb, hb2)
		a.oneOut[0] = xb
		b.matMul(a.oneOut[:], ly.down[:], hb)
		b.add(x, xb)
	}
	return x
}

// A layer's matrices are grouped by the input they read, so the backend
// prepares each input once for all of them.
type layer struct {
	attnNorm, ffnNorm []float32
	qkv               [3]quant.Matrix // wq, wk, wv
	wo                [1]quant.Matrix
	bq, bk, bv        []float32 // qwen2 only; nil for llama
	gateUp            [2]quant.Matrix
	down              [1]quant.Matrix
}
