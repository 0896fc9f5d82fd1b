package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/dlclark/regexp2/v2"
)

func mustCompile(t *testing.T, pattern string) *regexp2.Regexp {
	t.Helper()
	re, err := regexp2.Compile(pattern)
	if err != nil {
		t.Fatalf("compile %q: %v", pattern, err)
	}
	return re
}

func splitWith(t *testing.T, pre string, text string) []string {
	t.Helper()
	spec, ok := preSpecs[pre]
	if !ok {
		t.Fatalf("no pre-tokenizer %q", pre)
	}
	p, err := newPreTokenizer(spec.exprs)
	if err != nil {
		t.Fatal(err)
	}
	words, err := p.split(text, false)
	if err != nil {
		t.Fatal(err)
	}
	return words
}

// TestPreTokenizers pins the words each pre-tokenizer cuts hand-made text
// into, where Llama 3 and Qwen2 differ from GPT-2:
//   - digits: GPT-2 keeps a run, Llama 3 cuts it into groups of up to
//     three from the left, Qwen2 into single digits;
//   - contractions: GPT-2 knows only lower-case ones, the others any case;
//   - a letter run takes one leading non-letter, non-digit character
//     (".world") in Llama 3 and Qwen2, only a space in GPT-2;
//   - punctuation keeps the newlines after it, and a run of whitespace with
//     newlines ends at the last newline, in Llama 3 and Qwen2.
func TestPreTokenizers(t *testing.T) {
	tests := []struct {
		text              string
		gpt2, llama, qwen []string
	}{
		{
			text:  "1234567",
			gpt2:  []string{"1234567"},
			llama: []string{"123", "456", "7"},
			qwen:  []string{"1", "2", "3", "4", "5", "6", "7"},
		},
		{
			text:  "a 12345",
			gpt2:  []string{"a", " 12345"},
			llama: []string{"a", " ", "123", "45"},
			qwen:  []string{"a", " ", "1", "2", "3", "4", "5"},
		},
		{
			text:  "I'M DON'T we'll",
			gpt2:  []string{"I", "'", "M", " DON", "'", "T", " we", "'ll"},
			llama: []string{"I", "'M", " DON", "'T", " we", "'ll"},
			qwen:  []string{"I", "'M", " DON", "'T", " we", "'ll"},
		},
		{
			text:  "hello.world",
			gpt2:  []string{"hello", ".", "world"},
			llama: []string{"hello", ".world"},
			qwen:  []string{"hello", ".world"},
		},
		{
			text:  "x!!\n\ny",
			gpt2:  []string{"x", "!!", "\n", "\n", "y"},
			llama: []string{"x", "!!\n\n", "y"},
			qwen:  []string{"x", "!!\n\n", "y"},
		},
		{
			text:  "a \n \n  b",
			gpt2:  []string{"a", " \n \n ", " b"},
			llama: []string{"a", " \n \n", " ", " b"},
			qwen:  []string{"a", " \n \n", " ", " b"},
		},
		{
			text:  "   Hello",
			gpt2:  []string{"  ", " Hello"},
			llama: []string{"  ", " Hello"},
			qwen:  []string{"  ", " Hello"},
		},
		{
			// Greek letters and Arabic-Indic digits are \p{L} and \p{N}.
			text:  "αβγ١٢٣٤",
			gpt2:  []string{"αβγ", "١٢٣٤"},
			llama: []string{"αβγ", "١٢٣", "٤"},
			qwen:  []string{"αβγ", "١", "٢", "٣", "٤"},
		},
		{
			// U+3000 is whitespace; trailing whitespace stays one word.
			text:  "a\u3000\u3000",
			gpt2:  []string{"a", "\u3000\u3000"},
			llama: []string{"a", "\u3000\u3000"},
			qwen:  []string{"a", "\u3000\u3000"},
		},
	}
	for _, tt := range tests {
		for _, c := range []struct {
			pre  string
			want []string
		}{{"gpt-2", tt.gpt2}, {"llama-bpe", tt.llama}, {"qwen2", tt.qwen}} {
			if got := splitWith(t, c.pre, tt.text); !slices.Equal(got, c.want) {
				t.Errorf("%s split %q = %q, want %q", c.pre, tt.text, got, c.want)
			}
		}
	}
}

func TestPreTokenizerOthers(t *testing.T) {
	tests := []struct {
		pre, text string
		want      []string
	}{
		// starcoder and smollm split digits first, then run GPT-2's rules.
		{"smollm", "x = 123;", []string{"x", " =", " ", "1", "2", "3", ";"}},
		{"starcoder", "ab12", []string{"ab", "1", "2"}},
		// llama.cpp's default: punctuation runs, GPT-2, digit runs, triples.
		{"default", "a+b=1234!", []string{"a", "+", "b", "=", "123", "4", "!"}},
		{"deepseek-llm", "Hi 你好\n123  ", []string{"Hi", " ", "你好", "\n", "123", "  "}},
		{"bloom", "one, two", []string{"one", ",", " two"}},
	}
	for _, tt := range tests {
		if got := splitWith(t, tt.pre, tt.text); !slices.Equal(got, tt.want) {
			t.Errorf("%s split %q = %q, want %q", tt.pre, tt.text, got, tt.want)
		}
	}
}

// TestPreTokenizerTable compiles every pre-tokenizer llama.cpp names that
// this package supports.
func TestPreTokenizerTable(t *testing.T) {
	for name, spec := range preSpecs {
		p, err := newPreTokenizer(spec.exprs)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		const text = "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～\n\n\t x"
		words, err := p.split(text, false)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if strings.Join(words, "") != text {
			t.Errorf("%s: words %q do not join to the text", name, words)
		}
	}
}

// TestCustomSplittersMatchRegex checks llama.cpp's claim that its
// hand-written GPT-2 and Llama 3 splitters are the regular expressions, by
// running the expressions through the regexp2 path on random text.
func TestCustomSplittersMatchRegex(t *testing.T) {
	alphabet := []string{"a", "Z", "é", "中", "1", "٣", "Ⅻ", " ", " ", "\t", "\n", "\r", "\u00a0", "\u3000",
		"'", "s", "S", "t", "l", "L", "e", "r", "v", "d", "m", ".", ",", "!", "😀", "\u0301", "$", "-", "\x00"}
	for _, expr := range []string{exprGPT2, exprLlama3} {
		pattern, collapsed, err := translateExpr(expr)
		if err != nil || !collapsed {
			t.Fatalf("translate %q: %v %v", expr, collapsed, err)
		}
		re := &preTokenizer{steps: []splitStep{{re: mustCompile(t, pattern), collapsed: true}}}
		custom, err := newPreTokenizer([]string{expr})
		if err != nil || custom.steps[0].custom == nil {
			t.Fatalf("%q has no hand-written splitter", expr)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for range 3000 {
			var b strings.Builder
			for range rng.IntN(12) {
				b.WriteString(alphabet[rng.IntN(len(alphabet))])
			}
			text := b.String()
			want, err := re.split(text, false)
			if err != nil {
				t.Fatal(err)
			}
			got, err := custom.split(text, false)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%q: hand-written %q, regexp %q", text, got, want)
			}
		}
	}
}

func TestTranslateExpr(t *testing.T) {
	tests := []struct{ in, want string }{
		{`\p{N}+`, `[\u00D10-9]+`},
		{`[^\s\p{L}]`, `[^\s\u00D2A-Za-z]`},
		{`\s+$`, `\s+\z`},
		{`[$]\$`, `[$]\$`},
		{`[\\]\p{N}`, `[\\][\u00D10-9]`},
	}
	for _, tt := range tests {
		got, _, err := translateExpr(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("translateExpr(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, _, err := translateExpr(`\p{L}é`); err == nil {
		t.Error("categories mixed with non-ASCII text: no error")
	}
}
