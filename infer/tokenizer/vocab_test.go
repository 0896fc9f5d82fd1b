package tokenizer

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/rbee-dev/rbee/infer/gguf"
)

// The vocabularies and test vectors of llama.cpp's test-tokenizer-0, copied
// into testdata with llama.cpp's licence.
const (
	vocabLlamaSPM = "ggml-vocab-llama-spm.gguf"
	vocabPhi3     = "ggml-vocab-phi-3.gguf"
	vocabGPT2     = "ggml-vocab-gpt-2.gguf"
)

var vocabs sync.Map // path -> func() (*Tokenizer, error)

// testVocab loads a vocabulary once per test binary, from testdata when
// path is a bare file name.
func testVocab(tb testing.TB, path string) *Tokenizer {
	tb.Helper()
	if filepath.Base(path) == path {
		path = filepath.Join("testdata", path)
	}
	load, _ := vocabs.LoadOrStore(path, sync.OnceValues(func() (*Tokenizer, error) {
		f, err := gguf.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return FromGGUF(f)
	}))
	tok, err := load.(func() (*Tokenizer, error))()
	if err != nil {
		tb.Fatalf("load %s: %v", path, err)
	}
	return tok
}

type vocabCase struct {
	in   string
	want []int32
}

// readCases reads X.gguf.inp and X.gguf.out the way test-tokenizer-0 does:
// inputs separated by "\n__ggml_vocab_test__\n", one line of ids each.
func readCases(tb testing.TB, name string) []vocabCase {
	tb.Helper()
	inp, err := os.ReadFile(filepath.Join("testdata", name+".inp"))
	if err != nil {
		tb.Fatal(err)
	}
	out, err := os.ReadFile(filepath.Join("testdata", name+".out"))
	if err != nil {
		tb.Fatal(err)
	}
	const sep = "\n__ggml_vocab_test__\n"
	var ins []string
	for s := string(inp); s != ""; {
		i := strings.Index(s, sep)
		if i < 0 {
			ins = append(ins, s)
			break
		}
		ins = append(ins, s[:i])
		s = s[i+len(sep):]
	}
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(ins) != len(lines) {
		tb.Fatalf("%s: %d inputs but %d outputs", name, len(ins), len(lines))
	}
	cases := make([]vocabCase, len(ins))
	for i, line := range lines {
		cases[i].in = ins[i]
		for _, f := range strings.Fields(line) {
			id, err := strconv.ParseInt(f, 10, 32)
			if err != nil {
				tb.Fatalf("%s.out line %d: %v", name, i+1, err)
			}
			cases[i].want = append(cases[i].want, int32(id))
		}
	}
	return cases
}

// TestVocabVectors runs every case of llama.cpp's test vectors (no BOS, no
// special-token parsing, as test-tokenizer-0) and checks the way back:
//   - SentencePiece: Decode(Encode(s)) == s, since the space that
//     add_space_prefix puts first is the one Decode removes;
//   - byte-level BPE: the pieces join to s exactly, and Decode, which also
//     applies clean_up_tokenization_spaces, gives cleanUpSpaces(s).
func TestVocabVectors(t *testing.T) {
	for _, name := range []string{vocabLlamaSPM, vocabPhi3, vocabGPT2} {
		t.Run(name, func(t *testing.T) {
			tok := testVocab(t, name)
			cases := readCases(t, name)
			if len(cases) < 40 {
				t.Fatalf("only %d cases", len(cases))
			}
			for _, c := range cases {
				got, err := tok.Encode(c.in, false, false)
				if err != nil {
					t.Fatalf("Encode(%q): %v", c.in, err)
				}
				if !slices.Equal(got, c.want) {
					t.Errorf("Encode(%q)\n got %v\nwant %v", c.in, got, c.want)
					continue
				}
				switch tok.model {
				case modelSPM:
					if s := tok.Decode(got); s != c.in {
						t.Errorf("Decode(Encode(%q)) = %q", c.in, s)
					}
				case modelBPE:
					var joined []byte
					for _, id := range got {
						joined = append(joined, tok.Piece(id)...)
					}
					if string(joined) != c.in {
						t.Errorf("pieces of %q join to %q", c.in, joined)
					}
					want := string(cleanUpSpaces([]byte(c.in)))
					if s := tok.Decode(got); s != want {
						t.Errorf("Decode(Encode(%q)) = %q, want %q", c.in, s, want)
					}
				}
			}
		})
	}
}
