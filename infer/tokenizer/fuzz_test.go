package tokenizer

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEncode tokenizes arbitrary text with the SentencePiece and GPT-2
// vocabularies. Nothing may fail or panic. For valid UTF-8, Decode gives
// the text back on the SentencePiece vocabulary (byte fallback, no
// user-defined tokens) and the pieces join to it on GPT-2. Invalid UTF-8
// does not come back: llama.cpp turns it into U+FFFD before byte-level BPE,
// and SentencePiece may cut the "▁" standing for a space into byte tokens
// (as in "\xc3 00"). Special-token parsing
// runs too, on the Phi-3 vocabulary, whose whitespace stripping around
// special tokens changes the text.
func FuzzEncode(f *testing.F) {
	for _, name := range []string{vocabLlamaSPM, vocabGPT2} {
		for _, c := range readCases(f, name) {
			f.Add(c.in)
		}
	}
	f.Add("<|user|>\n<s>Hi</s> <|end|>\n<|assistant|><unk>")
	spm, gpt2, phi3 := testVocab(f, vocabLlamaSPM), testVocab(f, vocabGPT2), testVocab(f, vocabPhi3)
	f.Fuzz(func(t *testing.T, s string) {
		ids, err := spm.Encode(s, true, false)
		if err != nil {
			t.Fatalf("spm: %v", err)
		}
		if len(ids) == 0 || ids[0] != spm.BOS() {
			t.Fatalf("spm: no BOS in %v", ids)
		}
		if got := spm.Decode(ids[1:]); utf8.ValidString(s) && got != s {
			t.Fatalf("spm: Decode(Encode(%q)) = %q", s, got)
		}

		ids, err = gpt2.Encode(s, false, false)
		if err != nil {
			t.Fatalf("gpt2: %v", err)
		}
		var joined strings.Builder
		for _, id := range ids {
			if id < 0 || int(id) >= gpt2.VocabSize() {
				t.Fatalf("gpt2: id %d out of range", id)
			}
			joined.Write(gpt2.Piece(id))
		}
		if utf8.ValidString(s) && joined.String() != s {
			t.Fatalf("gpt2: pieces of %q join to %q", s, joined.String())
		}

		for _, tok := range []*Tokenizer{spm, gpt2, phi3} {
			ids, err := tok.Encode(s, true, true)
			if err != nil {
				t.Fatalf("%v", err)
			}
			d := tok.NewStreamDecoder()
			var out strings.Builder
			for _, id := range ids {
				out.WriteString(d.Add(id))
			}
			out.WriteString(d.Flush())
			if !utf8.ValidString(out.String()) {
				t.Fatalf("stream of %q is not valid UTF-8: %q", s, out.String())
			}
		}
	})
}
