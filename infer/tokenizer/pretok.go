package tokenizer

import (
	"fmt"
	"strings"
	"unicode"

	"github.com/dlclark/regexp2/v2"
)

// preSpec is one BPE pre-tokenizer (llama.cpp's LLAMA_VOCAB_PRE_TYPE_*):
// its split expressions, applied one after the other, and the vocabulary
// flags llama.cpp sets with it.
type preSpec struct {
	exprs        []string
	keepSpaces   bool // clean_spaces = false
	ignoreMerges bool // a word that is itself a token skips the merges
	addBOS       bool
	noBOS        bool // the pre-type clears the default BOS id
}

// The two expressions llama.cpp runs through hand-written code
// (unicode_regex_split_custom); every other one goes through regexp2.
const (
	exprGPT2   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
	exprLlama3 = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	exprQwen2  = `(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

var (
	preDefault = preSpec{exprs: []string{
		`[\p{P}\$\+<=>\^~\|]+`,
		exprGPT2,
		`\p{N}+`,
		`[0-9][0-9][0-9]`,
	}}
	preGPT2      = preSpec{exprs: []string{exprGPT2}}
	preLlama3    = preSpec{exprs: []string{exprLlama3}, ignoreMerges: true, addBOS: true}
	preDBRX      = preSpec{exprs: []string{exprLlama3}}
	preChatGLM   = preSpec{exprs: []string{exprLlama3}, noBOS: true}
	preQwen2     = preSpec{exprs: []string{exprQwen2}, keepSpaces: true}
	preStarcoder = preSpec{exprs: []string{`\p{N}`, exprGPT2}}
	preFalcon    = preSpec{exprs: []string{
		`[\p{P}\$\+<=>\^~\|` + "`" + `]+`,
		exprGPT2,
		`[0-9][0-9][0-9]`,
	}}
	preDeepseekLLM = preSpec{keepSpaces: true, exprs: []string{
		"[\r\n]",
		"\\s?[A-Za-z\u00B5\u00C0-\u00D6\u00D8-\u00F6\u00F8-\u01BA\u01BC-\u01BF\u01C4-\u0293\u0295-\u02AF\u0370-\u0373\u0376\u0377\u037B-\u037D\u037F\u0386\u0388-\u038A\u038C\u038E-\u03A1\u03A3-\u03F5\u03F7-\u0481\u048A-\u052F\u0531-\u0556\u10A0-\u10C5\u13A0-\u13F5\u13F8-\u13FD\u1C90-\u1CBA\u1CBD-\u1CBF\u1D00-\u1D2B\u1D6B-\u1D77\u1D79-\u1D9A\u1E00-\u1F15\u1F18-\u1F1D\u1F20-\u1F45\u1F48-\u1F4D\u1F50-\u1F57\u1F59\u1F5B\u1F5D\u1F5F-\u1F7D\u1F80-\u1FB4\u1FB6-\u1FBC\u1FBE\u1FC2-\u1FC4\u1FC6-\u1FCC\u1FD0-\u1FD3\u1FD6-\u1FDB\u1FE0-\u1FEC\u1FF2-\u1FF4\u1FF6-\u1FFC\u2102\u2107\u210A-\u2113\u2115\u2119-\u211D\u2124\u2126\u2128\u212A-\u212D\u212F-\u2134\u2139\u213C-\u213F\u2145-\u2149\u214E\u2183\u2184\u2C00-\u2C7B\u2C7E-\u2CE4\u2CEB-\u2CEE\u2CF2\u2CF3\uA640-\uA66D\uA680-\uA69B\uA722-\uA76F\uA771-\uA787\uA78B-\uA78E\uAB70-\uABBF\uFB00-\uFB06\uFB13-\uFB17\uFF21-\uFF3A\uFF41-\uFF5A\U00010400-\U0001044F\U000104B0-\U000104D3\U000104D8-\U000104FB\U00010C80-\U00010CB2\U00010CC0-\U00010CF2\U000118A0-\U000118DF\U0001E900-\U0001E943]+",
		"\\s?[!-/:-~\uFF01-\uFF0F\uFF1A-\uFF5E\u2018-\u201F\u3000-\u3002]+",
		`\s+$`,
		"[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
		`\p{N}+`,
	}}
	preDeepseekCoder = preSpec{keepSpaces: true, exprs: []string{
		"[\r\n]",
		`\s?\p{L}+`,
		`\s?\p{P}+`,
		"[\u4E00-\u9FA5\u0800-\u4E00\uAC00-\uD7FF]+",
		`\p{N}`,
	}}
	preBloom = preSpec{exprs: []string{" ?[^(\\s|.,!?\u2026\u3002\uFF0C\u3001\u0964\u06D4\u060C)]+"}}
	preGPT4o = preSpec{keepSpaces: true, exprs: []string{
		`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	}}
	preTekken = preSpec{keepSpaces: true, ignoreMerges: true, addBOS: true, exprs: []string{
		`[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
	}}
)

func with(s preSpec, f func(*preSpec)) preSpec { f(&s); return s }

// preSpecs maps tokenizer.ggml.pre to its pre-tokenizer, as llama.cpp's
// llama_vocab::impl::load does for the types supported here.
var preSpecs = map[string]preSpec{
	"default": preDefault,

	"llama3": preLlama3, "llama-v3": preLlama3, "llama-bpe": preLlama3, "falcon3": preLlama3,
	"falcon-h1": preLlama3, "pixtral": preLlama3, "midm-2.0": preLlama3, "lfm2": preLlama3,
	"dbrx": preDBRX, "smaug-bpe": preDBRX,

	"gpt-2": preGPT2, "phi-2": preGPT2, "jina-es": preGPT2, "jina-de": preGPT2, "gigachat": preGPT2,
	"jina-v2-es": preGPT2, "jina-v2-de": preGPT2, "a.x-4.0": preGPT2, "mellum": preGPT2,
	"exaone4": preGPT2, "mpt": preGPT2, "olmo": preGPT2, "jais": preGPT2,
	"trillion":        with(preGPT2, func(s *preSpec) { s.keepSpaces = true }),
	"granite-docling": with(preGPT2, func(s *preSpec) { s.keepSpaces = true }),

	"qwen2": preQwen2, "deepseek-r1-qwen": preQwen2, "kormo": preQwen2, "f2llmv2": preQwen2,
	"megrez":    with(preQwen2, func(s *preSpec) { s.keepSpaces = false }),
	"stablelm2": with(preQwen2, func(s *preSpec) { s.keepSpaces = false }),

	"starcoder": preStarcoder, "refact": preStarcoder, "codeshell": preStarcoder,
	"exaone": preStarcoder, "minerva-7b": preStarcoder,
	"smollm":    with(preStarcoder, func(s *preSpec) { s.keepSpaces = true }),
	"command-r": with(preStarcoder, func(s *preSpec) { s.keepSpaces = true }),

	"falcon":         preFalcon,
	"deepseek-llm":   preDeepseekLLM,
	"deepseek-coder": preDeepseekCoder,
	"bloom":          preBloom, "gpt3-finnish": preBloom,
	"poro-chat":   with(preBloom, func(s *preSpec) { s.keepSpaces = true }),
	"chatglm-bpe": preChatGLM, "glm4": preChatGLM,
	"gpt-4o": preGPT4o, "llama4": preGPT4o,
	"tekken": preTekken,
}

// preTokenizer splits text into the words BPE merges within.
type preTokenizer struct {
	steps []splitStep
}

type splitStep struct {
	custom    func(cpts []rune, offsets []int) []int
	re        *regexp2.Regexp
	collapsed bool
}

func newPreTokenizer(exprs []string) (*preTokenizer, error) {
	p := &preTokenizer{}
	for _, e := range exprs {
		var st splitStep
		switch e {
		case exprGPT2:
			st.custom = splitGPT2
		case exprLlama3:
			st.custom = splitLlama3
		default:
			pattern, collapsed, err := translateExpr(e)
			if err != nil {
				return nil, err
			}
			// The expressions cannot backtrack exponentially, but runs such
			// as \s+(?!\S) keep a stack entry per character.
			re, err := regexp2.Compile(pattern, regexp2.OptionMaxBacktrackingStackSize(-1))
			if err != nil {
				return nil, fmt.Errorf("compile pre-tokenizer expression %q: %w", e, err)
			}
			st.re, st.collapsed = re, collapsed
		}
		p.steps = append(p.steps, st)
	}
	return p, nil
}

// categories are the \p{..} classes llama.cpp's unicode_regex_split knows,
// with the code point standing for each category in the collapsed text and
// the ASCII characters of the category (which stay themselves).
var categories = map[string]struct {
	flag  cptFlags
	ascii string
}{
	`\p{N}`:  {flagNumber, `0-9`},
	`\p{L}`:  {flagLetter, `A-Za-z`},
	`\p{P}`:  {flagPunctuation, `!-#%-*,-/:-;?-@\[-\]_\{\}`},
	`\p{M}`:  {flagAccentMark, ``},
	`\p{S}`:  {flagSymbol, `\$\+<->^` + "`" + `\|`},
	`\p{Lu}`: {flagLetter, `A-Za-z`},
	`\p{Ll}`: {flagLetter, `A-Za-z`},
	`\p{Lt}`: {flagLetter, `A-Za-z`},
	`\p{Lm}`: {flagLetter, `A-Za-z`},
	`\p{Lo}`: {flagLetter, `A-Za-z`},
}

// collapsedRune is the code point standing for a category in the collapsed
// text, as llama.cpp's k_ucat_cpt; code points of other categories become
// 0xD0 and non-ASCII whitespace 0x0B.
func collapsedRune(f cptFlags) rune {
	switch f & categoryMask {
	case flagNumber:
		return 0xD1
	case flagLetter:
		return 0xD2
	case flagPunctuation:
		return 0xD3
	case flagAccentMark:
		return 0xD4
	case flagSymbol:
		return 0xD5
	}
	return 0xD0
}

// translateExpr turns one of llama.cpp's pre-tokenizer expressions into a
// regexp2 pattern that matches the same text. Like llama.cpp, an expression
// using Unicode categories runs on a collapsed copy of the text where each
// non-ASCII code point is replaced by its category's stand-in, and each
// \p{..} by a class of the stand-in and the category's ASCII members. The
// ECMAScript end anchor $ becomes \z, since .NET's $ also matches before a
// final newline.
func translateExpr(e string) (pattern string, collapsed bool, err error) {
	for name := range categories {
		if strings.Contains(e, name) {
			collapsed = true
		}
	}
	if collapsed {
		for _, r := range e {
			if r >= 0x80 {
				return "", false, fmt.Errorf("pre-tokenizer expression %q mixes Unicode categories and non-ASCII characters", e)
			}
		}
	}
	var b strings.Builder
	inside := false
	for i := 0; i < len(e); i++ {
		switch c := e[i]; {
		case c == '\\':
			if collapsed && strings.HasPrefix(e[i:], `\p{`) {
				if end := strings.IndexByte(e[i:], '}'); end > 0 {
					if cat, ok := categories[e[i:i+end+1]]; ok {
						if !inside {
							b.WriteByte('[')
						}
						fmt.Fprintf(&b, `\u%04X%s`, collapsedRune(cat.flag), cat.ascii)
						if !inside {
							b.WriteByte(']')
						}
						i += end
						continue
					}
				}
			}
			// Copy the escaped character with its backslash, so that it
			// is never taken for a bracket or an anchor.
			b.WriteByte(c)
			if i+1 < len(e) {
				i++
				b.WriteByte(e[i])
			}
			continue
		case c == '[':
			inside = true
		case c == ']':
			inside = false
		case c == '$' && !inside:
			b.WriteString(`\z`)
			continue
		}
		b.WriteByte(e[i])
	}
	return b.String(), collapsed, nil
}

// split returns the words of text, each re-encoded as UTF-8 and, when
// byteLevel, mapped through the GPT-2 byte-to-unicode table.
func (p *preTokenizer) split(text string, byteLevel bool) ([]string, error) {
	cpts := decodeCpts(text, make([]rune, 0, len(text)))
	if len(cpts) == 0 {
		return nil, nil
	}
	var plain, collapsed []rune
	offsets := []int{len(cpts)}
	for _, st := range p.steps {
		if st.custom != nil {
			offsets = st.custom(cpts, offsets)
			continue
		}
		in := plain
		if st.collapsed {
			if collapsed == nil {
				collapsed = collapseText(cpts, true)
			}
			in = collapsed
		} else if plain == nil {
			plain = collapseText(cpts, false)
			in = plain
		}
		var err error
		if offsets, err = regexSplit(st.re, in, offsets); err != nil {
			return nil, err
		}
	}
	// Build all words in one string and cut it, one allocation in all.
	ends := make([]int, len(offsets))
	var out, buf []byte
	start := 0
	for i, n := range offsets {
		buf = buf[:0]
		for _, r := range cpts[start : start+n] {
			buf = appendCpt(buf, r)
		}
		start += n
		if byteLevel {
			for _, c := range buf {
				out = append(out, byteChars[c]...)
			}
		} else {
			out = append(out, buf...)
		}
		ends[i] = len(out)
	}
	all := string(out)
	words := make([]string, len(ends))
	prev := 0
	for i, end := range ends {
		words[i] = all[prev:end]
		prev = end
	}
	return words, nil
}

// collapseText prepares the text a regexp step reads: non-ASCII whitespace
// becomes 0x0B (so \s matches it) and, when categories is set, every other
// non-ASCII code point becomes its category's stand-in.
func collapseText(cpts []rune, categories bool) []rune {
	out := make([]rune, len(cpts))
	for i, r := range cpts {
		if r < 0x80 {
			out[i] = r
			continue
		}
		f := flagsOf(r)
		switch {
		case f.isWhitespace():
			out[i] = 0x0B
		case categories:
			out[i] = collapsedRune(f)
		default:
			out[i] = r
		}
	}
	return out
}

// regexSplit cuts each piece of text at the matches of re: every match is a
// piece and so is every run of text between matches.
func regexSplit(re *regexp2.Regexp, text []rune, offsets []int) ([]int, error) {
	out := make([]int, 0, len(offsets))
	start := 0
	for _, n := range offsets {
		matches, err := re.FindAllRunesIndex(text[start:start+n], -1)
		if err != nil {
			return nil, fmt.Errorf("pre-tokenize: %w", err)
		}
		prev := 0
		for _, m := range matches {
			if m[1] == m[0] {
				continue
			}
			if m[0] > prev {
				out = append(out, m[0]-prev)
			}
			out = append(out, m[1]-m[0])
			prev = m[1]
		}
		if prev < n {
			out = append(out, n-prev)
		}
		start += n
	}
	return out, nil
}

const outOfRange rune = -1

// isOther is [^\s\p{L}\p{N}] for a code point inside the piece.
func isOther(f cptFlags) bool { return f&(flagWhitespace|flagLetter|flagNumber) == 0 && f != 0 }

// piece gives the hand-written splitters llama.cpp's view of one piece:
// code points and flags outside it read as "nothing".
type piece struct {
	cpts     []rune
	ini, end int
}

func (p piece) cpt(i int) rune {
	if i >= p.ini && i < p.end {
		return p.cpts[i]
	}
	return outOfRange
}

func (p piece) flags(i int) cptFlags {
	if i >= p.ini && i < p.end {
		return flagsOf(p.cpts[i])
	}
	return 0
}

// splitPieces runs a hand-written splitter over each piece that earlier
// passes made. step returns where the token that starts at pos ends; it may
// also cut inside it with add (add(end) cuts the text up to end).
func splitPieces(cpts []rune, offsets []int, step func(p piece, pos int, add func(end int)) int) []int {
	out := make([]int, 0, len(offsets))
	start := 0
	for _, off := range offsets {
		p := piece{cpts, start, start + off}
		start += off
		prev := p.ini
		add := func(end int) {
			if n := end - prev; n > 0 {
				out = append(out, n)
			}
			prev = end
		}
		for pos := p.ini; pos < p.end; {
			pos = step(p, pos, add)
			add(pos)
		}
	}
	return out
}

// contraction is the length of 's 't 're 've 'm 'll or 'd at pos, 0 if
// none; fold makes the match case-insensitive.
func contraction(p piece, pos int, fold bool) int {
	if p.cpt(pos) != '\'' || pos+1 >= p.end {
		return 0
	}
	lower := func(r rune) rune {
		if fold {
			return unicode.ToLower(r)
		}
		return r
	}
	n := lower(p.cpt(pos + 1))
	if n == 's' || n == 't' || n == 'm' || n == 'd' {
		return 2
	}
	if pos+2 < p.end {
		nn := lower(p.cpt(pos + 2))
		if n == 'r' && nn == 'e' || n == 'v' && nn == 'e' || n == 'l' && nn == 'l' {
			return 3
		}
	}
	return 0
}

// spaceEnd ends a run of nws whitespace characters at pos as both
// expressions do: \s+(?!\S) leaves the last space to the next word, \s+
// takes a run at the end, and anything else is one character.
func spaceEnd(p piece, pos, nws int) int {
	switch {
	case nws > 1 && p.cpt(pos+nws) != outOfRange:
		return pos + nws - 1
	case nws > 0:
		return pos + nws
	}
	return pos + 1
}

// splitGPT2 is llama.cpp's unicode_regex_split_custom_gpt2, the hand-written
// equivalent of exprGPT2 (with a final \s+).
func splitGPT2(cpts []rune, offsets []int) []int {
	return splitPieces(cpts, offsets, func(p piece, pos int, _ func(int)) int {
		// 's|'t|'re|'ve|'m|'ll|'d
		if n := contraction(p, pos, false); n > 0 {
			return pos + n
		}
		c, f := p.cpt(pos), p.flags(pos)
		f2 := f
		if c == ' ' {
			f2 = p.flags(pos + 1)
		}
		var class func(cptFlags) bool
		switch {
		case f2.isLetter(): // ' ?\p{L}+'
			class = cptFlags.isLetter
		case f2.isNumber(): // ' ?\p{N}+'
			class = cptFlags.isNumber
		case isOther(f2): // ' ?[^\s\p{L}\p{N}]+'
			class = isOther
		}
		if class != nil {
			end := pos
			if c == ' ' {
				end++
			}
			for class(p.flags(end)) {
				end++
			}
			return end
		}
		nws := 0
		for p.flags(pos + nws).isWhitespace() {
			nws++
		}
		return spaceEnd(p, pos, nws)
	})
}

// splitLlama3 is llama.cpp's unicode_regex_split_custom_llama3, the
// hand-written equivalent of exprLlama3.
func splitLlama3(cpts []rune, offsets []int) []int {
	return splitPieces(cpts, offsets, func(p piece, pos int, add func(int)) int {
		// (?i:'s|'t|'re|'ve|'m|'ll|'d)
		if n := contraction(p, pos, true); n > 0 {
			return pos + n
		}
		c, f := p.cpt(pos), p.flags(pos)
		// [^\r\n\p{L}\p{N}]?\p{L}+
		if !(c == '\r' || c == '\n' || f.isNumber()) && (f.isLetter() || p.flags(pos+1).isLetter()) {
			end := pos + 1
			for p.flags(end).isLetter() {
				end++
			}
			return end
		}
		// \p{N}{1,3}
		if f.isNumber() {
			end := pos
			for p.flags(end).isNumber() {
				end++
				if (end-pos)%3 == 0 {
					add(end)
				}
			}
			return end
		}
		// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
		f2 := f
		if c == ' ' {
			f2 = p.flags(pos + 1)
		}
		if f2&(flagWhitespace|flagLetter|flagNumber) == 0 && f != 0 {
			end := pos
			if c == ' ' {
				end++
			}
			for isOther(f2) {
				end++
				f2 = p.flags(end)
			}
			for c2 := p.cpt(end); c2 == '\r' || c2 == '\n'; c2 = p.cpt(end) {
				end++
			}
			return end
		}
		nws, lastRN := 0, 0
		for p.flags(pos + nws).isWhitespace() {
			if c2 := p.cpt(pos + nws); c2 == '\r' || c2 == '\n' {
				lastRN = pos + nws + 1
			}
			nws++
		}
		// \s*[\r\n]+
		if lastRN > 0 {
			return lastRN
		}
		return spaceEnd(p, pos, nws)
	})
}
