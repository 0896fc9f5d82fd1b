package tokenizer

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchText is about 1 KB of ordinary English.
const benchText = `The old lighthouse keeper climbed the spiral stairs every evening at dusk, ` +
	`carrying a small brass lantern and a thermos of strong black tea. For forty-two years ` +
	`he had watched the ships pass through the narrow channel, counting them in a leather ` +
	`notebook that now filled three shelves of his cottage. "You can't rush the sea," he ` +
	`liked to tell the children who visited on Sundays; "it'll wait for you, but it won't ` +
	`forgive you." In 1987 a storm tore the roof from the boathouse and scattered his ` +
	`notebooks across the rocks, yet he recovered all but eleven pages. The town council ` +
	`offered him a pension and a flat in the city, which he politely declined. Instead he ` +
	`repainted the tower white and red, replaced the cracked glass of the lamp room, and ` +
	`taught his granddaughter how to read the weather from the colour of the clouds. When ` +
	`the automatic beacon was finally installed, he kept climbing the stairs anyway, because ` +
	`someone, he said, should still be looking out at the water when the night comes in.`

func BenchmarkEncode(b *testing.B) {
	for _, v := range []struct{ name, file string }{{"spm", vocabLlamaSPM}, {"bpe", vocabGPT2}} {
		b.Run(v.name, func(b *testing.B) {
			tok := testVocab(b, v.file)
			b.SetBytes(int64(len(benchText)))
			for b.Loop() {
				if _, err := tok.Encode(benchText, true, true); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	tok := testVocab(b, vocabGPT2)
	ids, err := tok.Encode(benchText, false, false)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(benchText)))
	for b.Loop() {
		tok.Decode(ids)
	}
}

// BenchmarkFromGGUF builds a byte-level BPE vocabulary of about 150k tokens
// and merges, with a few hundred control tokens, the size of Llama 3's and
// Qwen2's.
func BenchmarkFromGGUF(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	tokens := make([]string, 0, 151_000)
	for i := range 256 {
		tokens = append(tokens, byteChars[i])
	}
	seen := map[string]bool{}
	var merges []string
	for len(merges) < 150_000 {
		l, r := tokens[rng.IntN(len(tokens))], tokens[rng.IntN(len(tokens))]
		if len(l)+len(r) > 24 || seen[l+r] {
			continue
		}
		seen[l+r] = true
		merges = append(merges, l+" "+r)
		tokens = append(tokens, l+r)
	}
	types := make([]int32, len(tokens), len(tokens)+300)
	for i := range types {
		types[i] = typeNormal
	}
	for i := range 300 {
		tokens = append(tokens, fmt.Sprintf("<|reserved_special_token_%d|>", i))
		types = append(types, typeControl)
	}
	f := buildGGUF(b, map[string]any{
		"tokenizer.ggml.model":        "gpt2",
		"tokenizer.ggml.pre":          "llama-bpe",
		"tokenizer.ggml.tokens":       tokens,
		"tokenizer.ggml.token_type":   types,
		"tokenizer.ggml.merges":       merges,
		"tokenizer.ggml.bos_token_id": uint32(len(tokens) - 1),
	})
	for b.Loop() {
		if _, err := FromGGUF(f); err != nil {
			b.Fatal(err)
		}
	}
}
