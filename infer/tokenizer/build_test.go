package tokenizer

import (
	"bytes"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/infer/gguf"
)

// buildGGUF writes the metadata into a GGUF image and parses it back.
func buildGGUF(tb testing.TB, kv map[string]any) *gguf.File {
	tb.Helper()
	w := gguf.NewWriter()
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		if err := w.Set(k, kv[k]); err != nil {
			tb.Fatalf("set %s: %v", k, err)
		}
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// byteLevelVocab is the metadata of a GPT-2 style vocabulary: the 256
// byte tokens, one token per merge ("a b" adds "ab"), then specials, which
// map token text to token type.
func byteLevelVocab(pre string, merges []string, specials ...string) map[string]any {
	var tokens []string
	var types []int32
	for b := range 256 {
		tokens = append(tokens, byteChars[b])
		types = append(types, typeNormal)
	}
	for _, m := range merges {
		tokens = append(tokens, strings.Replace(m, " ", "", 1))
		types = append(types, typeNormal)
	}
	for i := 0; i < len(specials); i += 2 {
		tokens = append(tokens, specials[i])
		typ := int32(typeControl)
		if specials[i+1] == "user" {
			typ = typeUserDefined
		}
		types = append(types, typ)
	}
	return map[string]any{
		"tokenizer.ggml.model":      "gpt2",
		"tokenizer.ggml.pre":        pre,
		"tokenizer.ggml.tokens":     tokens,
		"tokenizer.ggml.token_type": types,
		"tokenizer.ggml.merges":     merges,
	}
}

// bl writes text the way byte-level vocabularies store it.
func bl(text string) string {
	var b strings.Builder
	for i := 0; i < len(text); i++ {
		b.WriteString(byteChars[text[i]])
	}
	return b.String()
}

func mustTokenizer(tb testing.TB, kv map[string]any) *Tokenizer {
	tb.Helper()
	tok, err := FromGGUF(buildGGUF(tb, kv))
	if err != nil {
		tb.Fatalf("FromGGUF: %v", err)
	}
	return tok
}

func id(tb testing.TB, tok *Tokenizer, text string) int32 {
	tb.Helper()
	i, ok := tok.ids[text]
	if !ok {
		tb.Fatalf("no token %q", text)
	}
	return i
}

// spmVocab is the metadata of a small SentencePiece vocabulary. Scores
// favour later tokens so that merges are easy to predict.
func spmVocab(tokens []string, types []int32) map[string]any {
	scores := make([]float32, len(tokens))
	for i := range scores {
		scores[i] = float32(i)
	}
	return map[string]any{
		"tokenizer.ggml.model":      "llama",
		"tokenizer.ggml.tokens":     tokens,
		"tokenizer.ggml.scores":     scores,
		"tokenizer.ggml.token_type": types,
	}
}
