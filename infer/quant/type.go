// Package quant implements the ggml tensor types rbee runs: their byte layouts (bit for bit as ggml
// stores them, so GGUF tensors are used in place), conversion to and from float32, and the dot
// products behind matrix-vector multiplication.
//
// Weights are dotted against an activation vector prepared once per product in the format ggml calls
// the weight type's vec_dot_type: float32 for float weights, Q8_0 blocks for Q8_0 and Q4_0, Q8_K blocks
// for Q4_K and Q6_K. The kernels in this package are plain Go; they stay as the test oracle for faster
// architecture-specific kernels, which replace entries of the dispatch table in kernels.go.
package quant

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strconv"
)

// Type is a ggml tensor type id, as stored in GGUF tensor infos.
type Type uint32

// The ggml type ids this package runs (and Q8_K, the activation format of the K-quants).
const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q8_0 Type = 8
	Q4_K Type = 12
	Q6_K Type = 14
	Q8_K Type = 15
	BF16 Type = 30
)

// ErrUnsupported is wrapped by every error about a type this package cannot run.
var ErrUnsupported = errors.New("unsupported tensor type")

const (
	qk0 = 32  // elements per Q8_0 / Q4_0 block
	qkK = 256 // elements per K-quant super-block

	q8_0Bytes = 2 + qk0        // fp16 d, int8 qs[32]
	q4_0Bytes = 2 + qk0/2      // fp16 d, uint8 qs[16]
	q4KBytes  = 4 + 12 + qkK/2 // fp16 d, fp16 dmin, scales[12], qs[128]
	q6KBytes  = qkK/2 + qkK/4 + qkK/16 + 2
	q8KBytes  = 4 + qkK + qkK/16*2 // float32 d, int8 qs[256], int16 bsums[16]
)

// typeNames holds ggml's names for every type id it has assigned and not retired, so that errors
// about unsupported tensors name the type.
var typeNames = [...]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
	10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
	16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
	23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
	34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}

// String returns ggml's name for t, or "type(N)" for an id ggml does not define.
func (t Type) String() string {
	if int64(t) < int64(len(typeNames)) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "type(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// BlockSize returns the number of elements in one block of t, or 0 for a type this package does not know.
func (t Type) BlockSize() int {
	switch t {
	case F32, F16, BF16:
		return 1
	case Q8_0, Q4_0:
		return qk0
	case Q4_K, Q6_K, Q8_K:
		return qkK
	}
	return 0
}

// BlockBytes returns the size in bytes of one block of t, or 0 for a type this package does not know.
func (t Type) BlockBytes() int {
	switch t {
	case F32:
		return 4
	case F16, BF16:
		return 2
	case Q8_0:
		return q8_0Bytes
	case Q4_0:
		return q4_0Bytes
	case Q4_K:
		return q4KBytes
	case Q6_K:
		return q6KBytes
	case Q8_K:
		return q8KBytes
	}
	return 0
}

// Supported reports whether weights of type t can be run. Q8_K is only an activation format.
func (t Type) Supported() bool {
	switch t {
	case F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K:
		return true
	}
	return false
}

// RowBytes returns the size in bytes of n elements of type t.
func RowBytes(t Type, n int) (int, error) {
	if !t.Supported() {
		return 0, fmt.Errorf("quant: %s: %w", t, ErrUnsupported)
	}
	if n < 0 {
		return 0, fmt.Errorf("quant: %s row of %d elements: negative length", t, n)
	}
	bs, bb := t.BlockSize(), t.BlockBytes()
	if n%bs != 0 {
		return 0, fmt.Errorf("quant: %s row of %d elements: not a multiple of the block size %d", t, n, bs)
	}
	if n/bs > math.MaxInt/bb {
		return 0, fmt.Errorf("quant: %s row of %d elements: size overflows", t, n)
	}
	return n / bs * bb, nil
}

// TensorBytes returns the size in bytes of a tensor of elems elements of type t. Sizes come from
// untrusted files, so overflow is an error rather than a wrap.
func TensorBytes(t Type, elems uint64) (uint64, error) {
	if !t.Supported() {
		return 0, fmt.Errorf("quant: %s: %w", t, ErrUnsupported)
	}
	bs, bb := uint64(t.BlockSize()), uint64(t.BlockBytes())
	if elems%bs != 0 {
		return 0, fmt.Errorf("quant: %s tensor of %d elements: not a multiple of the block size %d", t, elems, bs)
	}
	hi, lo := bits.Mul64(elems/bs, bb)
	if hi != 0 {
		return 0, fmt.Errorf("quant: %s tensor of %d elements: size overflows", t, elems)
	}
	return lo, nil
}
