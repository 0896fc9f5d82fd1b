package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestFromGGUFErrors(t *testing.T) {
	spm := func(edit func(kv map[string]any)) map[string]any {
		kv := spmVocab([]string{"<unk>", "<s>", "</s>", "a"}, []int32{2, 3, 3, 1})
		edit(kv)
		return kv
	}
	bpe := func(edit func(kv map[string]any)) map[string]any {
		kv := byteLevelVocab("gpt-2", []string{"a b"})
		edit(kv)
		return kv
	}
	tests := []struct {
		name string
		kv   map[string]any
		want string
	}{
		{"no model", spm(func(kv map[string]any) { delete(kv, "tokenizer.ggml.model") }), "tokenizer.ggml.model is missing"},
		{"model type", spm(func(kv map[string]any) { kv["tokenizer.ggml.model"] = uint32(1) }), "tokenizer.ggml.model has type uint32, want string"},
		{"unknown model", spm(func(kv map[string]any) { kv["tokenizer.ggml.model"] = "bert" }), `tokenizer.ggml.model "bert" is not supported`},
		{"no vocab", spm(func(kv map[string]any) { kv["tokenizer.ggml.model"] = "none" }), "has no vocabulary"},
		{"unknown pre", bpe(func(kv map[string]any) { kv["tokenizer.ggml.pre"] = "made-up" }), `tokenizer.ggml.pre "made-up" is not supported`},
		{"no tokens", spm(func(kv map[string]any) { delete(kv, "tokenizer.ggml.tokens") }), "tokenizer.ggml.tokens is missing"},
		{"tokens type", spm(func(kv map[string]any) { kv["tokenizer.ggml.tokens"] = []int32{1, 2} }), "tokenizer.ggml.tokens holds int32, want an array of strings"},
		{"tokens not an array", spm(func(kv map[string]any) { kv["tokenizer.ggml.tokens"] = "a" }), "tokenizer.ggml.tokens has type string, want an array"},
		{"empty tokens", spm(func(kv map[string]any) { kv["tokenizer.ggml.tokens"] = []string{} }), "tokenizer.ggml.tokens is empty"},
		{"short scores", spm(func(kv map[string]any) { kv["tokenizer.ggml.scores"] = []float32{0} }), "tokenizer.ggml.scores has 1 entries for 4 tokens"},
		{"scores type", spm(func(kv map[string]any) { kv["tokenizer.ggml.scores"] = []string{"a", "b", "c", "d"} }), "tokenizer.ggml.scores holds string, want float32 or int32"},
		{"types type", spm(func(kv map[string]any) { kv["tokenizer.ggml.token_type"] = []float32{1, 1, 1, 1} }), "tokenizer.ggml.token_type holds float32, want int32"},
		{"short types", spm(func(kv map[string]any) { kv["tokenizer.ggml.token_type"] = []int32{1} }), "tokenizer.ggml.token_type has 1 entries for 4 tokens"},
		{"duplicate", spm(func(kv map[string]any) { kv["tokenizer.ggml.tokens"] = []string{"<unk>", "a", "b", "a"} }), `duplicate token "a" has ids 1 and 3`},
		{"no merges", bpe(func(kv map[string]any) { delete(kv, "tokenizer.ggml.merges") }), "tokenizer.ggml.merges is missing"},
		{"merges type", bpe(func(kv map[string]any) { kv["tokenizer.ggml.merges"] = []int32{1} }), "tokenizer.ggml.merges holds int32, want an array of strings"},
		{"add_bos type", spm(func(kv map[string]any) { kv["tokenizer.ggml.add_bos_token"] = "yes" }), "tokenizer.ggml.add_bos_token has type string, want bool"},
		{"bos type", spm(func(kv map[string]any) { kv["tokenizer.ggml.bos_token_id"] = "1" }), "tokenizer.ggml.bos_token_id has type string, want an integer"},
		{"add_bos without bos", bpe(func(kv map[string]any) {
			kv["tokenizer.ggml.tokens"] = []string{"a", "b", "ab"}
			kv["tokenizer.ggml.token_type"] = []int32{1, 1, 1}
			kv["tokenizer.ggml.add_bos_token"] = true
		}), "add_bos_token is true but the vocabulary has no BOS token"},
	}
	for _, tt := range tests {
		_, err := FromGGUF(buildGGUF(t, tt.kv))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	if _, err := FromGGUF(nil); err == nil {
		t.Error("FromGGUF(nil): no error")
	}
}

func TestSPMDefaults(t *testing.T) {
	kv := spmVocab([]string{"<unk>", "<s>", "</s>", "▁", "a", "b", "▁a", "ab", "▁ab"}, []int32{2, 3, 3, 1, 1, 1, 1, 1, 1})
	// Integer scores are accepted, as llama.cpp does.
	kv["tokenizer.ggml.scores"] = []int32{0, 0, 0, 1, 2, 3, 4, 5, 6}
	tok := mustTokenizer(t, kv)
	if !tok.AddBOS() || tok.BOS() != 1 || tok.EOS() != 2 || tok.VocabSize() != 9 {
		t.Errorf("AddBOS %v BOS %d EOS %d size %d, want true 1 2 9", tok.AddBOS(), tok.BOS(), tok.EOS(), tok.VocabSize())
	}
	got, err := tok.Encode("ab", true, false)
	if want := []int32{1, 8}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Encode(ab) = %v, %v; want %v", got, err, want)
	}
	// No token and no byte tokens for é: one unknown token for the character.
	got, err = tok.Encode("aé b", false, false)
	if want := []int32{6, 0, 3, 5}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Encode(aé b) = %v, %v; want %v", got, err, want)
	}
	if s := tok.Decode(got); s != "a b" {
		t.Errorf("Decode = %q, want %q (the unknown token renders nothing)", s, "a b")
	}

	kv["tokenizer.ggml.add_space_prefix"] = false
	kv["tokenizer.ggml.add_bos_token"] = false
	kv["tokenizer.ggml.add_eos_token"] = true
	tok = mustTokenizer(t, kv)
	got, err = tok.Encode("ab", true, false)
	if want := []int32{7, 2}; err != nil || !slices.Equal(got, want) {
		t.Errorf("without space prefix and BOS, with EOS: Encode(ab) = %v, %v; want %v", got, err, want)
	}
	if s := tok.Decode([]int32{6}); s != " a" {
		t.Errorf("Decode without space prefix = %q, want %q", s, " a")
	}
}

func TestByteFallback(t *testing.T) {
	tok := testVocab(t, vocabLlamaSPM)
	got, err := tok.Encode("🦙", false, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{id(t, tok, "▁"), id(t, tok, "<0xF0>"), id(t, tok, "<0x9F>"), id(t, tok, "<0xA6>"), id(t, tok, "<0x99>")}
	if !slices.Equal(got, want) {
		t.Errorf("Encode(🦙) = %v, want %v", got, want)
	}
	if s := tok.Decode(got); s != "🦙" {
		t.Errorf("Decode = %q", s)
	}
	if p := tok.Piece(want[1]); string(p) != "\xF0" {
		t.Errorf("Piece(<0xF0>) = %q", p)
	}
	// Invalid UTF-8 without spaces goes through byte by byte and comes back
	// unchanged (a space after a bad lead byte can be cut, see FuzzEncode).
	const bad = "a\xff\xe2\x28b"
	got, err = tok.Encode(bad, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if s := tok.Decode(got); s != bad {
		t.Errorf("Decode(Encode(%q)) = %q", bad, s)
	}
}

func TestSpecialTokensSPM(t *testing.T) {
	tok := testVocab(t, vocabLlamaSPM)
	hi, err := tok.Encode("Hi", false, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tok.Encode("<s>Hi</s>", false, true)
	if want := append(append([]int32{1}, hi...), 2); err != nil || !slices.Equal(got, want) {
		t.Errorf("parsed: %v, %v; want %v", got, err, want)
	}
	got, err = tok.Encode("<s>Hi</s>", false, false)
	if err != nil || slices.Contains(got, 1) || slices.Contains(got, 2) {
		t.Errorf("not parsed: %v, %v; want no BOS or EOS", got, err)
	}
	if s := tok.Decode(got); s != "<s>Hi</s>" {
		t.Errorf("Decode = %q", s)
	}
	// After a special token the next text gets its own space prefix; a BOS
	// in front keeps the space (llama.cpp strips it from the first token
	// only).
	if s := tok.Decode(append([]int32{1}, hi...)); s != " Hi" {
		t.Errorf("Decode(BOS Hi) = %q, want %q", s, " Hi")
	}
	if p := tok.Piece(1); len(p) != 0 || tok.Token(1) != "<s>" {
		t.Errorf("Piece(BOS) = %q, Token(BOS) = %q", p, tok.Token(1))
	}
	if tok.Token(-1) != "" || tok.Piece(1<<30) != nil || tok.Decode([]int32{-3, 1 << 30}) != "" {
		t.Error("ids out of range are not ignored")
	}
}

// TestSpecialTokensPhi3 covers Phi-3's rule (from its name) that whitespace
// after a special token is dropped, and llama.cpp's promotion of </s> from
// user-defined to control because it ends generation.
func TestSpecialTokensPhi3(t *testing.T) {
	tok := testVocab(t, vocabPhi3)
	hi, err := tok.Encode("Hi", false, false)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tok.Encode("<|user|>\nHi<|end|>\n<|assistant|>", true, true)
	want := append(append([]int32{1, 32010}, hi...), 32007, 32001)
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Encode = %v, %v; want %v", got, err, want)
	}
	for _, id := range []int32{32000, 32007, 2} {
		if !tok.IsEOG(id) {
			t.Errorf("IsEOG(%d %q) = false", id, tok.Token(id))
		}
	}
	if tok.IsEOG(32010) || tok.IsEOG(1) {
		t.Error("<|user|> or <s> ends generation")
	}
	got, err = tok.Encode("a</s>", false, false)
	if err != nil || slices.Contains(got, 2) {
		t.Errorf("</s> parsed without parseSpecial: %v, %v", got, err)
	}
}

func llama3Vocab(pre string) map[string]any {
	sp := bl(" ")
	kv := byteLevelVocab(pre, []string{
		"h e", "l l", "he ll", "hell o", sp + " w", "o r", sp + "w or", sp + "wor l", sp + "worl d",
		// "xyz" is a token, but no merge builds "xy".
		"xy z",
	}, "<|begin_of_text|>", "control", "<|end_of_text|>", "control", "<|start_header_id|>", "control",
		"<|eot_id|>", "control", "<tool>", "user")
	kv["tokenizer.ggml.bos_token_id"] = uint32(266)
	kv["tokenizer.ggml.eos_token_id"] = uint32(267)
	return kv
}

func TestBPELlama3(t *testing.T) {
	tok := mustTokenizer(t, llama3Vocab("llama-bpe"))
	hello, world, xyz := id(t, tok, "hello"), id(t, tok, bl(" world")), id(t, tok, "xyz")
	bos, eos, header, eot, tool := int32(266), int32(267), int32(268), int32(269), int32(270)
	if !tok.AddBOS() || tok.BOS() != bos || tok.EOS() != eos {
		t.Errorf("AddBOS %v BOS %d EOS %d", tok.AddBOS(), tok.BOS(), tok.EOS())
	}
	tests := []struct {
		text           string
		special, parse bool
		want           []int32
	}{
		{"hello world", true, false, []int32{bos, hello, world}},
		// Llama 3 ignores merges for a word that is a token.
		{"xyz", false, false, []int32{xyz}},
		{"<|start_header_id|>hello<|eot_id|>", false, true, []int32{header, hello, eot}},
		// User-defined tokens are matched even without parseSpecial.
		{"a<tool>b", false, false, []int32{'a', tool, 'b'}},
	}
	for _, tt := range tests {
		got, err := tok.Encode(tt.text, tt.special, tt.parse)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("Encode(%q, %v, %v) = %v, %v; want %v", tt.text, tt.special, tt.parse, got, err, tt.want)
		}
	}
	got, err := tok.Encode("<|start_header_id|>hello<|eot_id|>", false, false)
	if err != nil || slices.ContainsFunc(got, func(id int32) bool { return id >= 266 }) {
		t.Errorf("control tokens parsed without parseSpecial: %v, %v", got, err)
	}
	if s := tok.Decode(got); s != "<|start_header_id|>hello<|eot_id|>" {
		t.Errorf("Decode = %q", s)
	}
	if !tok.IsEOG(eot) || !tok.IsEOG(eos) || tok.IsEOG(bos) || tok.IsEOG(hello) {
		t.Error("end-of-generation set is wrong")
	}
	if string(tok.Piece(tool)) != "<tool>" || len(tok.Piece(eot)) != 0 || tok.Token(eot) != "<|eot_id|>" {
		t.Errorf("Piece(<tool>) = %q, Piece(<|eot_id|>) = %q", tok.Piece(tool), tok.Piece(eot))
	}

	// GPT-2's pre-tokenizer does not ignore merges and adds no BOS.
	tok = mustTokenizer(t, llama3Vocab("gpt-2"))
	got, err = tok.Encode("xyz", true, false)
	if want := []int32{'x', 'y', 'z'}; err != nil || !slices.Equal(got, want) {
		t.Errorf("gpt-2: Encode(xyz) = %v, %v; want %v", got, err, want)
	}
}

func TestBPEQwen2(t *testing.T) {
	kv := byteLevelVocab("qwen2", []string{"u s", "us e", "use r"},
		"<|endoftext|>", "control", "<|im_start|>", "control", "<|im_end|>", "control")
	kv["tokenizer.ggml.bos_token_id"] = uint32(259)
	kv["tokenizer.ggml.eos_token_id"] = uint32(261)
	kv["tokenizer.ggml.padding_token_id"] = uint32(259)
	kv["tokenizer.ggml.add_bos_token"] = false
	tok := mustTokenizer(t, kv)
	endoftext, start, end, user := int32(259), int32(260), int32(261), id(t, tok, "user")
	// The byte tokens come first, in byte order.
	nl, space, h, i, one, two := int32('\n'), int32(' '), int32('h'), int32('i'), int32('1'), int32('2')
	if tok.AddBOS() {
		t.Error("AddBOS = true")
	}
	got, err := tok.Encode("<|im_start|>user\nhi 12<|im_end|>\n", true, true)
	want := []int32{start, user, nl, h, i, space, one, two, end, nl}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("Encode = %v, %v; want %v", got, err, want)
	}
	for _, id := range []int32{endoftext, end} {
		if !tok.IsEOG(id) {
			t.Errorf("IsEOG(%q) = false", tok.Token(id))
		}
	}
	if tok.IsEOG(start) {
		t.Error("IsEOG(<|im_start|>) = true")
	}
	// Qwen2 keeps spaces as they are on the way back.
	if s := tok.Decode([]int32{h, space, ','}); s != "h ," {
		t.Errorf("Decode = %q, want %q", s, "h ,")
	}
}

func TestDecodeCleansSpaces(t *testing.T) {
	tok := testVocab(t, vocabGPT2)
	ids, err := tok.Encode("Hello , world ! I 'm here , don 't we 're", false, false)
	if err != nil {
		t.Fatal(err)
	}
	if s, want := tok.Decode(ids), "Hello, world! I'm here, don 't we're"; s != want {
		t.Errorf("Decode = %q, want %q", s, want)
	}
}

func TestCleanUpSpaces(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{" .", "."},
		{"Hello , world !", "Hello, world!"},
		{"a ' b", "a'b"},
		{"I 'm, we 're, you 've, it 's", "I'm, we're, you've, it's"},
		{"don 't, I 'd, we 'll", "don 't, I 'd, we 'll"},
		{"what ?!", "what?!"},
	}
	for _, tt := range tests {
		if got := string(cleanUpSpaces([]byte(tt.in))); got != tt.want {
			t.Errorf("cleanUpSpaces(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStreamDecoder(t *testing.T) {
	tok := testVocab(t, vocabLlamaSPM)
	b := func(x byte) int32 { return tok.byteToken[x] }
	hello := id(t, tok, "▁Hello")
	tests := []struct {
		name  string
		ids   []int32
		want  []string
		flush string
	}{
		{"emoji over byte tokens", []int32{hello, b(0xF0), b(0x9F), b(0xA6), b(0x99)}, []string{" Hello", "", "", "", "🦙"}, ""},
		{"two-byte character", []int32{b(0xC3), 1, b(0xA9)}, []string{"", "", "é"}, ""},
		{"byte that starts nothing", []int32{b(0xFF), hello}, []string{"\uFFFD", " Hello"}, ""},
		{"truncated sequence", []int32{b(0xF0), b(0x9F), hello}, []string{"", "", "\uFFFD Hello"}, ""},
		{"surrogate", []int32{b(0xED), b(0xA0), b(0x80)}, []string{"", "\uFFFD\uFFFD", "\uFFFD"}, ""},
		{"held at the end", []int32{hello, b(0xE2), b(0x82)}, []string{" Hello", "", ""}, "\uFFFD"},
	}
	for _, tt := range tests {
		d := tok.NewStreamDecoder()
		for i, id := range tt.ids {
			if got := d.Add(id); got != tt.want[i] {
				t.Errorf("%s: Add #%d = %q, want %q", tt.name, i, got, tt.want[i])
			}
		}
		if got := d.Flush(); got != tt.flush {
			t.Errorf("%s: Flush = %q, want %q", tt.name, got, tt.flush)
		}
		if got := d.Flush(); got != "" {
			t.Errorf("%s: second Flush = %q", tt.name, got)
		}
	}
}

// stories260K and its reference outputs live in the engine's testdata.
func storiesFile(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "testdata", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStories260K(t *testing.T) {
	tok := testVocab(t, storiesFile(t, "stories260K.gguf"))
	if tok.VocabSize() != 512 || !tok.AddBOS() || tok.BOS() != 1 || tok.EOS() != 2 || !tok.IsEOG(2) {
		t.Fatalf("size %d AddBOS %v BOS %d EOS %d", tok.VocabSize(), tok.AddBOS(), tok.BOS(), tok.EOS())
	}
	got, err := tok.Encode("Once upon a time", true, false)
	if want := []int32{1, 403, 407, 261, 378}; err != nil || !slices.Equal(got, want) {
		t.Errorf("Encode = %v, %v; want %v", got, err, want)
	}
	// Characters outside the 512 tokens fall back to bytes.
	got, err = tok.Encode("é!", false, false)
	if err != nil || tok.Decode(got) != "é!" {
		t.Errorf("Encode(é!) = %v, %v; decodes to %q", got, err, tok.Decode(got))
	}

	for _, ref := range []string{"stories260K-once-upon-a-time-64.json", "stories260K-empty-prompt-256.json"} {
		data, err := os.ReadFile(storiesFile(t, filepath.Join("reference", ref)))
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			Prompt    string  `json:"prompt"`
			PromptIDs []int32 `json:"prompt_ids"`
			Generated []int32 `json:"generated_ids"`
			Text      string  `json:"completion_text"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatal(err)
		}
		if ids, err := tok.Encode(r.Prompt, true, false); err != nil || !slices.Equal(ids, r.PromptIDs) {
			t.Errorf("%s: Encode(%q) = %v, %v; want %v", ref, r.Prompt, ids, err, r.PromptIDs)
		}
		if s := tok.Decode(r.Generated); s != r.Text {
			t.Errorf("%s: Decode = %q, want %q", ref, s, r.Text)
		}
		var streamed strings.Builder
		d := tok.NewStreamDecoder()
		for _, id := range r.Generated {
			streamed.WriteString(d.Add(id))
		}
		streamed.WriteString(d.Flush())
		// The stream keeps the first token's space, which Decode drops.
		if s := strings.TrimPrefix(streamed.String(), " "); s != r.Text {
			t.Errorf("%s: streamed %q, want %q", ref, s, r.Text)
		}
	}
}

// TestConcurrentEncode shares one Tokenizer between goroutines (run with
// -race to check that encoding keeps no shared state).
func TestConcurrentEncode(t *testing.T) {
	for _, tok := range []*Tokenizer{testVocab(t, vocabLlamaSPM), testVocab(t, vocabGPT2), mustTokenizer(t, llama3Vocab("default"))} {
		want, err := tok.Encode(benchText, true, true)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan string, 4)
		for range 4 {
			wg.Go(func() {
				for range 20 {
					if got, err := tok.Encode(benchText, true, true); err != nil || !slices.Equal(got, want) {
						errs <- fmt.Sprintf("concurrent Encode = %v, %v", got, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
}
