package infer

import "github.com/rbee-dev/rbee/infer/quant"

// tensor is a batch of rows vectors of cols float32 values in a backend's
// memory. Tensors are made once per engine at their largest size; a step
// works on a view of its first rows.
type tensor struct {
	rows, cols int
	host       []float32 // the CPU backend's storage, row after row
}

func (t tensor) view(rows int) tensor {
	t.rows = rows
	return t
}

func (t tensor) row(i int) []float32 { return t.host[i*t.cols : (i+1)*t.cols] }

// stepLayout describes the tokens of one step: where each sits in its
// sequence and in the KV pool, which sequence's blocks it attends to, and
// whose logits are wanted.
type stepLayout struct {
	tokens    []int32   // per token
	positions []int32   // per token: its position in its sequence
	slots     []int32   // per token: block*kvBlockTokens + offset of its keys and values
	seqOf     []int32   // per token: index into blocks
	blocks    [][]int32 // per sequence of the step: its block table
	logitRows []int32   // tokens whose logits are wanted, in order
}

// backend runs the operations of the forward pass. The model's recipe
// (forward.go) calls nothing else, so another backend, a GPU, can be added
// without touching the model code: it owns the tensors, the KV storage and
// the weights' placement, and hands back only logits. Every operation works
// on whole batches, and every row's result must depend on that row's inputs
// alone, never on the other rows: that is what makes a request's output
// independent of the batch it runs in.
type backend interface {
	newTensor(rows, cols int) tensor
	// embed looks up the rows of tokens in the embedding matrix.
	embed(dst tensor, emb quant.Matrix, tokens []int32)
	rmsNorm(dst, x tensor, weight []float32, eps float32)
	// matMul computes dsts[i] = ws[i]·x for every row of x: several matrices
	// that read the same input share one pass of preparing it.
	matMul(dsts []tensor, ws []quant.Matrix, x tensor)
	addBias(x tensor, bias []float32)
	// rope rotates each row's heads by the angles of its position.
	rope(x tensor, heads int, positions []int32)
	// storeKV writes the keys and values of each row into its KV slot.
	storeKV(layer int, k, v tensor, slots []int32)
	// attention computes each query row's attention over its sequence's
	// positions up to its own, reading the keys and values stored so far.
	attention(out, q tensor, layer int, l *stepLayout)
	swiGLU(gate, up tensor)
	add(dst, src tensor)
	// gather copies rows of src, in the order given, into dst.
	gather(dst, src tensor, rows []int32)
	// copyKVBlock copies every layer's keys and values of one block.
	copyKVBlock(dst, src int32)
	// readRow copies a row of a tensor to the host.
	readRow(dst []float32, src tensor, row int)
}
