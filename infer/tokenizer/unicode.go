package tokenizer

import (
	"sync"
	"unicode"
)

// cptFlags mirrors llama.cpp's unicode_cpt_flags: one general-category bit
// per code point (unassigned code points count as control, as \p{C} does in
// the regex module that generated llama.cpp's tables) plus a whitespace bit
// for the Unicode White_Space property.
type cptFlags uint16

const (
	flagUndefined cptFlags = 1 << iota
	flagNumber
	flagLetter
	flagSeparator
	flagAccentMark
	flagPunctuation
	flagSymbol
	flagControl

	flagWhitespace cptFlags = 0x100

	categoryMask cptFlags = 0xFF
)

func (f cptFlags) isNumber() bool     { return f&flagNumber != 0 }
func (f cptFlags) isLetter() bool     { return f&flagLetter != 0 }
func (f cptFlags) isWhitespace() bool { return f&flagWhitespace != 0 }

// maxCodepoint bounds the table llama.cpp builds; larger values (which its
// lenient decoder can produce from F4..F7 lead bytes) are "undefined".
const maxCodepoint = 0x110000

// bmpFlags caches the flags of the Basic Multilingual Plane; the first
// lookup builds it (a few milliseconds), astral code points are classified
// on each call.
var bmpFlags = sync.OnceValue(func() *[0x10000]cptFlags {
	var t [0x10000]cptFlags
	for r := range t {
		t[r] = classify(rune(r))
	}
	return &t
})

func flagsOf(r rune) cptFlags {
	switch {
	case r < 0 || r >= maxCodepoint:
		return flagUndefined
	case r < 0x10000:
		return bmpFlags()[r]
	}
	return classify(r)
}

func classify(r rune) cptFlags {
	var f cptFlags
	switch {
	case unicode.IsLetter(r):
		f = flagLetter
	case unicode.IsNumber(r):
		f = flagNumber
	case unicode.IsMark(r):
		f = flagAccentMark
	case unicode.IsPunct(r):
		f = flagPunctuation
	case unicode.IsSymbol(r):
		f = flagSymbol
	case unicode.Is(unicode.Z, r):
		f = flagSeparator
	default:
		f = flagControl
	}
	if unicode.Is(unicode.White_Space, r) {
		f |= flagWhitespace
	}
	return f
}

// utf8Len is llama.cpp's unicode_len_utf8: the sequence length announced by
// a lead byte, 1 for continuation bytes.
func utf8Len(b byte) int {
	return [16]int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4}[b>>4]
}

// decodeCpts decodes s as llama.cpp's unicode_cpts_from_utf8 does. It is
// lenient where Go's decoder is strict (overlong forms, surrogates and values
// up to 0x1FFFFF decode as written) and turns each byte that starts no
// complete sequence into U+FFFD, so the pre-tokenizer splits text exactly
// where llama.cpp does.
func decodeCpts(s string, dst []rune) []rune {
	for i := 0; i < len(s); {
		r, n := decodeCpt(s, i)
		dst = append(dst, r)
		i += n
	}
	return dst
}

func decodeCpt(s string, i int) (rune, int) {
	cont := func(j int) bool { return j < len(s) && s[j]&0xC0 == 0x80 }
	b := s[i]
	switch {
	case b&0x80 == 0:
		return rune(b), 1
	case b&0x40 == 0:
	case b&0x20 == 0:
		if cont(i + 1) {
			return rune(b&0x1F)<<6 | rune(s[i+1]&0x3F), 2
		}
	case b&0x10 == 0:
		if cont(i+1) && cont(i+2) {
			return rune(b&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), 3
		}
	case b&0x08 == 0:
		if cont(i+1) && cont(i+2) && cont(i+3) {
			return rune(b&0x07)<<18 | rune(s[i+1]&0x3F)<<12 | rune(s[i+2]&0x3F)<<6 | rune(s[i+3]&0x3F), 4
		}
	}
	return 0xFFFD, 1
}

// appendCpt encodes r as llama.cpp's unicode_cpt_to_utf8 does (surrogates
// included). Values above U+10FFFF, on which llama.cpp throws, become U+FFFD.
func appendCpt(b []byte, r rune) []byte {
	switch {
	case r < 0:
		return appendCpt(b, 0xFFFD)
	case r <= 0x7F:
		return append(b, byte(r))
	case r <= 0x7FF:
		return append(b, 0xC0|byte(r>>6), 0x80|byte(r&0x3F))
	case r <= 0xFFFF:
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	case r <= 0x10FFFF:
		return append(b, 0xF0|byte(r>>18), 0x80|byte(r>>12&0x3F), 0x80|byte(r>>6&0x3F), 0x80|byte(r&0x3F))
	}
	return appendCpt(b, 0xFFFD)
}

// GPT-2's byte-to-unicode table: printable bytes stand for themselves, the
// other 68 map to U+0100 and up, so every byte string is a printable word.
var (
	byteChars [256]string
	runeByte  [0x100 + 68]int16
)

func init() {
	printable := func(b int) bool {
		return b >= 0x21 && b <= 0x7E || b >= 0xA1 && b <= 0xAC || b >= 0xAE && b <= 0xFF
	}
	for i := range runeByte {
		runeByte[i] = -1
	}
	n := 0
	for b := range 256 {
		r := rune(b)
		if !printable(b) {
			r = rune(0x100 + n)
			n++
		}
		byteChars[b] = string(r)
		runeByte[r] = int16(b)
	}
}

// unescapedByte returns the byte a byte-level BPE code point stands for.
func unescapedByte(r rune) (byte, bool) {
	if r < 0 || int(r) >= len(runeByte) || runeByte[r] < 0 {
		return 0, false
	}
	return byte(runeByte[r]), true
}
