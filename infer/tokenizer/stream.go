package tokenizer

import "unicode/utf8"

// StreamDecoder renders generated tokens as text one token at a time. It
// never returns part of a UTF-8 sequence: bytes of a character split across
// tokens are held until the character is complete, and bytes that cannot
// become a valid character are replaced by U+FFFD (one per maximal invalid
// subsequence) as soon as that is certain.
//
// Pieces are joined as they are (Piece): no leading space is removed and no
// spaces are cleaned up, since generated text continues a prompt.
// A StreamDecoder is not safe for concurrent use.
type StreamDecoder struct {
	t         *Tokenizer
	pending   []byte
	stripLead bool
}

// NewStreamDecoder returns a decoder with nothing pending.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// StartOfText tells the decoder that its text begins the document (the
// prompt rendered no text), so the space a SentencePiece vocabulary puts
// before the first word is dropped, as Decode drops it.
func (d *StreamDecoder) StartOfText() {
	d.stripLead = d.t.addSpacePrefix
}

// Add takes the next generated token and returns the text that is now
// complete, possibly "".
func (d *StreamDecoder) Add(id int32) string {
	if len(d.pending) == 0 && !d.stripLead {
		// The usual case, a piece of whole characters, costs no allocation.
		if p := d.t.piece(id); utf8.ValidString(p) {
			return p
		}
	}
	d.pending = append(d.pending, d.t.piece(id)...)
	var out []byte
	i := 0
	for i < len(d.pending) {
		r, n := utf8.DecodeRune(d.pending[i:])
		if r != utf8.RuneError || n > 1 {
			out = append(out, d.pending[i:i+n]...)
			i += n
			continue
		}
		k := validPrefix(d.pending[i:])
		if i+k == len(d.pending) && k > 0 {
			break // may still complete
		}
		out = utf8.AppendRune(out, utf8.RuneError)
		i += max(k, 1)
	}
	d.pending = append(d.pending[:0], d.pending[i:]...)
	if d.stripLead && len(out) > 0 {
		d.stripLead = false
		if out[0] == ' ' {
			out = out[1:]
		}
	}
	return string(out)
}

// Flush returns what is still held, as U+FFFD since it can no longer
// complete, and empties the decoder.
func (d *StreamDecoder) Flush() string {
	if len(d.pending) == 0 {
		return ""
	}
	d.pending = d.pending[:0]
	return string(utf8.RuneError)
}

// validPrefix is the length of the longest prefix of b that begins a
// well-formed UTF-8 sequence without completing it; 0 if b[0] cannot start
// one.
func validPrefix(b []byte) int {
	var need int
	lo, hi := byte(0x80), byte(0xBF) // range of the second byte
	switch c := b[0]; {
	case c >= 0xC2 && c <= 0xDF:
		need = 2
	case c == 0xE0:
		need, lo = 3, 0xA0
	case c == 0xED:
		need, hi = 3, 0x9F
	case c >= 0xE1 && c <= 0xEF:
		need = 3
	case c == 0xF0:
		need, lo = 4, 0x90
	case c == 0xF4:
		need, hi = 4, 0x8F
	case c >= 0xF1 && c <= 0xF3:
		need = 4
	default:
		return 0
	}
	k := 1
	for k < len(b) && k < need-1 {
		if c := b[k]; k == 1 && (c < lo || c > hi) || k > 1 && (c < 0x80 || c > 0xBF) {
			break
		}
		k++
	}
	return k
}
