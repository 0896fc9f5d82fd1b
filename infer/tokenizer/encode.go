package tokenizer

import (
	"fmt"
	"math"
	"strings"
)

// spaceMark is SentencePiece's visible space, U+2581.
const spaceMark = "\u2581"

// fragment is a run of text still to tokenize (tok == noToken) or a special
// token found in the text.
type fragment struct {
	tok        int32
	start, end int
}

// Encode turns text into token ids. With addSpecial, BOS and EOS are added
// as the vocabulary asks (see AddBOS). With parseSpecial, the texts of
// control and unknown tokens (such as "<|im_start|>" or "<s>") become those
// tokens; without it they are tokenized as plain text. User-defined tokens
// are always matched, as in llama.cpp. SentencePiece puts a space before
// the text and after every special token when add_space_prefix is set.
func (t *Tokenizer) Encode(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	if len(text) > math.MaxInt32 {
		return nil, fmt.Errorf("encode: text of %d bytes is too long", len(text))
	}
	var frags []fragment
	if text != "" {
		frags = t.partition(text, parseSpecial)
	}
	out := make([]int32, 0, len(text)/3+2)
	if addSpecial && t.addBOS {
		out = append(out, t.bos)
	}
	var err error
	if t.model == modelSPM {
		out, err = t.encodeSPM(text, frags, out)
	} else {
		out, err = t.encodeBPE(text, frags, out)
	}
	if err != nil {
		return nil, err
	}
	if addSpecial && t.addEOS {
		out = append(out, t.eos)
	}
	return out, nil
}

// partition is llama.cpp's tokenizer_st_partition: it cuts the text at each
// special token's occurrences, longest tokens first, honouring the tokens'
// whitespace-stripping attributes.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	frags := []fragment{{noToken, 0, len(text)}}
	var next []fragment
	for _, id := range t.special {
		a, tok := t.attrs[id], t.tokens[id]
		if !parseSpecial && a&(attrControl|attrUnknown) != 0 {
			continue
		}
		if !strings.Contains(text, tok) {
			continue
		}
		next = next[:0]
		for _, fr := range frags {
			if fr.tok != noToken {
				next = append(next, fr)
				continue
			}
			pos, end := fr.start, fr.end
			for {
				i := strings.Index(text[pos:end], tok)
				if i < 0 {
					if pos < end {
						next = append(next, fragment{noToken, pos, end})
					}
					break
				}
				left := pos + i
				if a&attrLStrip != 0 {
					for left > pos && isCSpace(text[left-1]) {
						left--
					}
				}
				if left > pos {
					next = append(next, fragment{noToken, pos, left})
				}
				next = append(next, fragment{tok: id})
				pos += i + len(tok)
				if a&attrRStrip != 0 {
					for pos < end && isCSpace(text[pos]) {
						pos++
					}
				}
			}
		}
		frags, next = next, frags
	}
	return frags
}

// isCSpace is C's isspace in the "C" locale, which llama.cpp uses to strip.
func isCSpace(c byte) bool {
	return c == ' ' || c >= '\t' && c <= '\r'
}

func (t *Tokenizer) encodeSPM(text string, frags []fragment, out []int32) ([]int32, error) {
	// A space goes before the first fragment and after every special token.
	prevSpecial := true
	var buf strings.Builder
	for _, fr := range frags {
		if fr.tok != noToken {
			out = append(out, fr.tok)
			prevSpecial = true
			continue
		}
		buf.Reset()
		if t.addSpacePrefix && prevSpecial {
			buf.WriteString(spaceMark)
		}
		s := text[fr.start:fr.end]
		for {
			i := strings.IndexByte(s, ' ')
			if i < 0 {
				break
			}
			buf.WriteString(s[:i])
			buf.WriteString(spaceMark)
			s = s[i+1:]
		}
		buf.WriteString(s)
		var err error
		if out, err = t.spm(buf.String(), out); err != nil {
			return nil, err
		}
		prevSpecial = false
	}
	return out, nil
}

// symbol is one piece of a word being merged: s[start:start+n], linked to
// its neighbours; n is 0 once merged into the symbol on its left. BPE
// keeps the symbol's token (noToken if its text is none).
type symbol struct {
	start, n   int
	prev, next int
	id         int32
}

func splitSymbols(s string, syms []symbol) []symbol {
	syms = syms[:0]
	for off := 0; off < len(s); {
		n := min(utf8Len(s[off]), len(s)-off)
		syms = append(syms, symbol{start: off, n: n, prev: len(syms) - 1, next: len(syms) + 1, id: noToken})
		off += n
	}
	if len(syms) > 0 {
		syms[len(syms)-1].next = -1
	}
	return syms
}

// bigram is a candidate merge of two adjacent symbols. The heap pops the
// lowest key first (leftmost on ties): the negated score for SentencePiece,
// the merge rank for BPE. nLeft and nRight are the sides' lengths when it
// was pushed: sides only grow or vanish, so a change in either length
// means the pair is out of date.
type bigram struct {
	key           float64
	left, right   int32
	nLeft, nRight int32
}

// merge runs the merge loop shared by both models: pop the best pair, join
// its right symbol into the left one, and offer the new neighbours to try.
func merge(syms []symbol, work *bigramHeap, try func(left, right int), merged func(*symbol)) {
	for i := 1; i < len(syms); i++ {
		try(i-1, i)
	}
	for len(*work) > 0 {
		bg := work.pop()
		l, r := &syms[bg.left], &syms[bg.right]
		if l.n == 0 || r.n == 0 || l.n != int(bg.nLeft) || r.n != int(bg.nRight) {
			continue
		}
		l.n += r.n
		r.n = 0
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = int(bg.left)
		}
		if merged != nil {
			merged(l)
		}
		try(l.prev, int(bg.left))
		try(int(bg.left), l.next)
	}
}

// spm is llama.cpp's llm_tokenizer_spm_session: merge the adjacent pair
// whose union is the highest-scoring token (leftmost first on ties) until
// none is left, then write each symbol as its token or as byte tokens.
func (t *Tokenizer) spm(s string, out []int32) ([]int32, error) {
	syms := splitSymbols(s, make([]symbol, 0, len(s)))
	if len(syms) == 0 {
		return out, nil
	}
	var work bigramHeap
	try := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		l, r := syms[left], syms[right]
		if id, ok := t.ids[s[l.start:r.start+r.n]]; ok {
			work.push(bigram{-float64(t.scores[id]), int32(left), int32(right), int32(l.n), int32(r.n)})
		}
	}
	merge(syms, &work, try, nil)
	// Every merged symbol is a token by construction, so a symbol that is
	// not one is a single character and goes out byte by byte (llama.cpp's
	// resegment never finds a recorded merge for it).
	for i := 0; i != -1; i = syms[i].next {
		text := s[syms[i].start : syms[i].start+syms[i].n]
		if id, ok := t.ids[text]; ok {
			out = append(out, id)
			continue
		}
		if !t.hasByteTokens(text) {
			// llama.cpp aborts here; SentencePiece without byte fallback
			// writes one unknown token for the character.
			if t.unk == noToken {
				return nil, fmt.Errorf("encode: %q has no token, no byte tokens and the vocabulary no unknown token", text)
			}
			out = append(out, t.unk)
			continue
		}
		for j := 0; j < len(text); j++ {
			out = append(out, t.byteToken[text[j]])
		}
	}
	return out, nil
}

func (t *Tokenizer) hasByteTokens(s string) bool {
	for j := 0; j < len(s); j++ {
		if t.byteToken[s[j]] == noToken {
			return false
		}
	}
	return true
}

func (t *Tokenizer) encodeBPE(text string, frags []fragment, out []int32) ([]int32, error) {
	var st bpeScratch
	for _, fr := range frags {
		if fr.tok != noToken {
			out = append(out, fr.tok)
			continue
		}
		words, err := t.pre.split(text[fr.start:fr.end], true)
		if err != nil {
			return nil, fmt.Errorf("encode: %w", err)
		}
		for _, w := range words {
			out = t.bpeWord(w, out, &st)
		}
	}
	return out, nil
}

type bpeScratch struct {
	syms []symbol
	work bigramHeap
}

// bpeWord is llama.cpp's llm_tokenizer_bpe_session for one word: apply the
// lowest-ranked merge among adjacent pairs (leftmost first) until none
// applies, then write each symbol as its token. A symbol with no token goes
// out as the tokens of its single bytes, skipping bytes that have none, as
// llama.cpp does.
func (t *Tokenizer) bpeWord(w string, out []int32, st *bpeScratch) []int32 {
	if t.ignoreMerges {
		if id, ok := t.ids[w]; ok {
			return append(out, id)
		}
	}
	syms := splitSymbols(w, st.syms)
	st.syms = syms
	for i := range syms {
		syms[i].id = t.charID(w[syms[i].start : syms[i].start+syms[i].n])
	}
	st.work = st.work[:0]
	try := func(left, right int) {
		if left < 0 || right < 0 {
			return
		}
		if rank, ok := t.rank(w, &syms[left], &syms[right]); ok {
			st.work.push(bigram{float64(rank), int32(left), int32(right), int32(syms[left].n), int32(syms[right].n)})
		}
	}
	merge(syms, &st.work, try, func(s *symbol) {
		s.id = noToken
		if id, ok := t.ids[w[s.start:s.start+s.n]]; ok {
			s.id = id
		}
	})
	for _, sym := range syms {
		switch {
		case sym.n == 0:
		case sym.id != noToken:
			out = append(out, sym.id)
		default:
			for j := sym.start; j < sym.start+sym.n; j++ {
				if id := t.byteToken[w[j]]; id != noToken {
					out = append(out, id)
				}
			}
		}
	}
	return out
}

// charID is the token of one character of a byte-level word.
func (t *Tokenizer) charID(c string) int32 {
	if r, n := decodeCpt(c, 0); n == len(c) {
		if b, ok := unescapedByte(r); ok && byteChars[b] == c {
			return t.charToken[b]
		}
	}
	if id, ok := t.ids[c]; ok {
		return id
	}
	return noToken
}

// rank is llama.cpp's find_bpe_rank for two adjacent symbols.
func (t *Tokenizer) rank(w string, l, r *symbol) (int32, bool) {
	if l.id != noToken && r.id != noToken {
		rank, ok := t.ranks[idPair(l.id, r.id)]
		return rank, ok
	}
	if t.textRanks == nil {
		return 0, false
	}
	rank, ok := t.textRanks[mergePair{w[l.start : l.start+l.n], w[r.start : r.start+r.n]}]
	return rank, ok
}

// bigramHeap is a binary min-heap of candidate merges.
type bigramHeap []bigram

func (a bigram) before(b bigram) bool {
	return a.key < b.key || a.key == b.key && a.left < b.left
}

func (h *bigramHeap) push(x bigram) {
	*h = append(*h, x)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].before(s[p]) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

func (h *bigramHeap) pop() bigram {
	s := *h
	top, last := s[0], len(s)-1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < last && s[l].before(s[m]) {
			m = l
		}
		if r < last && s[r].before(s[m]) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return top
}
