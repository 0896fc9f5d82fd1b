// Package tokenizer turns text into token ids and back using the vocabulary
// stored in a GGUF file's metadata, with the behaviour of llama.cpp
// (src/llama-vocab.cpp): SentencePiece-style merging by score with byte
// fallback for tokenizer.ggml.model "llama", byte-level BPE with the
// pre-tokenizer named by tokenizer.ggml.pre for "gpt2", llama.cpp's special
// token splitting, BOS/EOS rules, end-of-generation tokens and detokenisation.
//
// A Tokenizer is immutable once built and safe for concurrent use.
package tokenizer

// attr is llama.cpp's llama_token_attr bit set.
type attr uint16

const (
	attrUnknown attr = 1 << iota
	attrUnused
	attrNormal
	attrControl
	attrUserDefined
	attrByte
	_ // normalized: not used by these tokenizers
	attrLStrip
	attrRStrip
)

// tokenizer.ggml.token_type values.
const (
	typeNormal      = 1
	typeUnknown     = 2
	typeControl     = 3
	typeUserDefined = 4
	typeUnused      = 5
	typeByte        = 6
)

type model int

const (
	modelSPM model = iota // tokenizer.ggml.model "llama"
	modelBPE              // tokenizer.ggml.model "gpt2"
)

// noToken is llama.cpp's LLAMA_TOKEN_NULL.
const noToken int32 = -1

// Tokenizer encodes and decodes text for one vocabulary.
type Tokenizer struct {
	model  model
	tokens []string
	scores []float32
	attrs  []attr
	ids    map[string]int32

	// pieces holds every token's text as generated output (control tokens
	// included, as llama.cpp's piece cache); piece i is
	// pieces[pieceEnd[i-1]:pieceEnd[i]]. A string, so that pieces are handed
	// out as text without allocating.
	pieces   string
	pieceEnd []uint32

	bos, eos, eot, eom, unk int32
	eog                     map[int32]struct{}

	addBOS, addEOS, addSpacePrefix bool
	cleanSpaces                    bool

	// special lists the control, user-defined and unknown tokens, longest
	// text first: the order in which Encode looks for them in the text.
	special []int32

	// SPM: the token standing for each byte when no token covers a character.
	byteToken [256]int32

	// BPE: merge ranks by the token ids of the two sides, and by their
	// texts for the rare merge whose sides are not both tokens.
	ranks        map[uint64]int32
	textRanks    map[mergePair]int32
	charToken    [256]int32 // token of each byte's byte-level character
	pre          *preTokenizer
	ignoreMerges bool
}

type mergePair struct{ left, right string }

func idPair(left, right int32) uint64 { return uint64(uint32(left))<<32 | uint64(uint32(right)) }

// VocabSize is the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// BOS is the beginning-of-sequence token, -1 if there is none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS is the end-of-sequence token, -1 if there is none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// AddBOS reports whether Encode with addSpecial puts BOS first.
func (t *Tokenizer) AddBOS() bool { return t.addBOS }

// IsEOG reports whether generating id ends the generation: EOS, EOT, EOM
// and the tokens llama.cpp recognises by their text (<|im_end|>,
// <|eot_id|>, <|endoftext|>, <end_of_turn>, ...).
func (t *Tokenizer) IsEOG(id int32) bool {
	_, ok := t.eog[id]
	return ok
}

// Token returns the token's text as stored in the vocabulary (what a chat
// template's bos_token and eos_token hold); "" for an id out of range.
func (t *Tokenizer) Token(id int32) string {
	if !t.valid(id) {
		return ""
	}
	return t.tokens[id]
}

// Piece returns the bytes id contributes to generated text: control and
// unknown tokens give none, byte tokens their byte. The bytes may be part
// of a UTF-8 sequence that other tokens complete; see StreamDecoder.
func (t *Tokenizer) Piece(id int32) []byte {
	return append([]byte(nil), t.piece(id)...)
}

func (t *Tokenizer) valid(id int32) bool { return id >= 0 && int(id) < len(t.tokens) }

// piece is llama.cpp's token_to_piece with special=false: the cached text,
// or nothing for control and unknown tokens.
func (t *Tokenizer) piece(id int32) string {
	if !t.valid(id) || t.attrs[id]&(attrUnknown|attrControl) != 0 {
		return ""
	}
	start := uint32(0)
	if id > 0 {
		start = t.pieceEnd[id-1]
	}
	return t.pieces[start:t.pieceEnd[id]]
}
