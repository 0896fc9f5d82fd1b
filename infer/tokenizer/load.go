package tokenizer

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/rbee-dev/rbee/infer/gguf"
)

const (
	keyModel          = "tokenizer.ggml.model"
	keyPre            = "tokenizer.ggml.pre"
	keyTokens         = "tokenizer.ggml.tokens"
	keyScores         = "tokenizer.ggml.scores"
	keyTokenType      = "tokenizer.ggml.token_type"
	keyMerges         = "tokenizer.ggml.merges"
	keyAddBOS         = "tokenizer.ggml.add_bos_token"
	keyAddEOS         = "tokenizer.ggml.add_eos_token"
	keyAddSpacePrefix = "tokenizer.ggml.add_space_prefix"
	keyName           = "general.name"
)

// Token texts llama.cpp recognises when the file names no such token
// (llama_vocab::impl::load); a match also becomes a control token.
var (
	eotTexts = set("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>")
	eomTexts    = set("<|eom_id|>")
	fimPreTexts = set("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>",
		"▁<PRE>", "<|code_prefix|>", "<|prefix|>")
	fimSufTexts = set("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>",
		"▁<SUF>", "<|code_suffix|>", "<|suffix|>")
	fimMidTexts = set("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>",
		"▁<MID>", "<|code_middle|>", "<|middle|>")
	fimPadTexts = set("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
	fimRepTexts = set("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
	fimSepTexts = set("<|file_sep|>")

	// eogTexts end generation wherever they are in the vocabulary.
	eogTexts = set("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>",
		"<|calls|>", "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>",
		"[EOT]", "[EOS]", "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>",
		"<|tool_response>", "<｜end▁of▁sentence｜>", "[e~[")

	// alwaysRendered are gpt-oss tokens llama.cpp turns into user-defined
	// ones so that they show in the output.
	alwaysRendered = []string{"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"}
)

// namedTexts holds every text above, so that most tokens cost one lookup.
var namedTexts = func() map[string]bool {
	all := map[string]bool{}
	for _, m := range []map[string]bool{eotTexts, eomTexts, fimPreTexts, fimSufTexts, fimMidTexts,
		fimPadTexts, fimRepTexts, fimSepTexts, eogTexts} {
		for s := range m {
			all[s] = true
		}
	}
	return all
}()

func set(texts ...string) map[string]bool {
	m := make(map[string]bool, len(texts))
	for _, s := range texts {
		m[s] = true
	}
	return m
}

// FromGGUF builds the tokenizer described by the file's tokenizer.ggml.*
// metadata. Supported models are "llama" (SentencePiece) and "gpt2"
// (byte-level BPE, with the pre-tokenizers llama.cpp names in
// tokenizer.ggml.pre that this package knows).
func FromGGUF(f *gguf.File) (*Tokenizer, error) {
	if f == nil {
		return nil, errors.New("tokenizer: no gguf file")
	}
	t, err := load(f)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return t, nil
}

// specials holds the special token ids while the vocabulary loads.
type specials struct {
	bos, eos, eot, eom, unk                        int32
	fimPre, fimSuf, fimMid, fimPad, fimRep, fimSep int32
}

func load(f *gguf.File) (*Tokenizer, error) {
	name, ok, err := stringKey(f, keyModel)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%s is missing", keyModel)
	}
	t := &Tokenizer{}
	sp := specials{eot: noToken, eom: noToken, fimPre: noToken, fimSuf: noToken,
		fimMid: noToken, fimPad: noToken, fimRep: noToken, fimSep: noToken}
	var pre preSpec
	switch name {
	case "llama":
		t.model = modelSPM
		sp.bos, sp.eos, sp.unk = 1, 2, 0
		t.addBOS, t.addSpacePrefix = true, true
	case "gpt2":
		t.model = modelBPE
		sp.bos, sp.eos, sp.unk = 11, 11, noToken
		preName, _, err := stringKey(f, keyPre)
		if err != nil {
			return nil, err
		}
		if preName == "" {
			preName = "default"
		}
		if pre, ok = preSpecs[preName]; !ok {
			return nil, fmt.Errorf("%s %q is not supported", keyPre, preName)
		}
		t.cleanSpaces = !pre.keepSpaces
		t.ignoreMerges = pre.ignoreMerges
		t.addBOS = pre.addBOS
		if pre.noBOS {
			sp.bos = noToken
		}
	case "no_vocab", "none":
		return nil, fmt.Errorf("%s is %q: the file has no vocabulary", keyModel, name)
	default:
		return nil, fmt.Errorf("%s %q is not supported (want \"llama\" or \"gpt2\")", keyModel, name)
	}
	if v, ok, err := boolKey(f, keyAddSpacePrefix); err != nil {
		return nil, err
	} else if ok {
		t.addSpacePrefix = v
	}

	if err := t.loadTokens(f); err != nil {
		return nil, err
	}
	if t.model == modelBPE {
		if err := t.loadMerges(f); err != nil {
			return nil, err
		}
		if t.pre, err = newPreTokenizer(pre.exprs); err != nil {
			return nil, err
		}
	}
	if err := t.loadSpecials(f, &sp); err != nil {
		return nil, err
	}
	if err := t.applyNameQuirks(f); err != nil {
		return nil, err
	}
	t.buildCaches()
	return t, nil
}

func (t *Tokenizer) loadTokens(f *gguf.File) error {
	arr, ok, err := arrayKey(f, keyTokens)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is missing", keyTokens)
	}
	texts, ok := arr.Values.([]string)
	if !ok {
		return fmt.Errorf("%s holds %s, want an array of strings", keyTokens, arr.Elem)
	}
	n := len(texts)
	if n == 0 {
		return fmt.Errorf("%s is empty", keyTokens)
	}
	if n > math.MaxInt32 {
		return fmt.Errorf("%s has %d tokens, more than token ids can address", keyTokens, n)
	}

	var scores []float32
	a, ok, err := arrayKey(f, keyScores)
	if err != nil {
		return err
	}
	if ok {
		switch v := a.Values.(type) {
		case []float32:
			scores = v
		case []int32:
			scores = make([]float32, len(v))
			for i, s := range v {
				scores[i] = float32(s)
			}
		default:
			return fmt.Errorf("%s holds %s, want float32 or int32", keyScores, a.Elem)
		}
		if len(scores) < n {
			return fmt.Errorf("%s has %d entries for %d tokens", keyScores, len(scores), n)
		}
	}
	var types []int32
	if a, ok, err = arrayKey(f, keyTokenType); err != nil {
		return err
	}
	if ok {
		if types, ok = a.Values.([]int32); !ok {
			return fmt.Errorf("%s holds %s, want int32", keyTokenType, a.Elem)
		}
		if len(types) < n {
			return fmt.Errorf("%s has %d entries for %d tokens", keyTokenType, len(types), n)
		}
	}

	t.tokens = make([]string, n)
	t.scores = make([]float32, n)
	t.attrs = make([]attr, n)
	t.ids = make(map[string]int32, n)
	for i, text := range texts {
		if text == "" {
			// As llama.cpp: an empty token could never be matched and would
			// collide with other empty tokens.
			text = "[EMPTY_" + strconv.Itoa(i) + "]"
		}
		if prev, dup := t.ids[text]; dup {
			return fmt.Errorf("%s: duplicate token %q has ids %d and %d", keyTokens, text, prev, i)
		}
		t.ids[text] = int32(i)
		t.tokens[i] = text
		if scores != nil {
			t.scores[i] = scores[i]
		}
		t.attrs[i] = attrNormal
		if types != nil {
			t.attrs[i] = typeAttr(types[i])
		}
	}
	return nil
}

func typeAttr(typ int32) attr {
	switch typ {
	case typeNormal:
		return attrNormal
	case typeUnknown:
		return attrUnknown
	case typeControl:
		return attrControl
	case typeUserDefined:
		return attrUserDefined
	case typeUnused:
		return attrUnused
	case typeByte:
		return attrByte
	}
	return 0
}

func (t *Tokenizer) loadMerges(f *gguf.File) error {
	arr, ok, err := arrayKey(f, keyMerges)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is missing", keyMerges)
	}
	merges, ok := arr.Values.([]string)
	if !ok {
		return fmt.Errorf("%s holds %s, want an array of strings", keyMerges, arr.Elem)
	}
	t.ranks = make(map[uint64]int32, len(merges))
	for i, m := range merges {
		// As llama.cpp: split at the first space after the first byte, so a
		// merge of a space itself still parses; a line without one is kept
		// as an empty pair.
		var p mergePair
		if len(m) > 1 {
			if j := strings.IndexByte(m[1:], ' '); j >= 0 {
				p = mergePair{m[:j+1], m[j+2:]}
			}
		}
		l, lok := t.ids[p.left]
		r, rok := t.ids[p.right]
		if !lok || !rok {
			if t.textRanks == nil {
				t.textRanks = map[mergePair]int32{}
			}
			if _, dup := t.textRanks[p]; !dup {
				t.textRanks[p] = int32(i)
			}
			continue
		}
		if _, dup := t.ranks[idPair(l, r)]; !dup {
			t.ranks[idPair(l, r)] = int32(i)
		}
	}
	return nil
}

func (t *Tokenizer) loadSpecials(f *gguf.File, sp *specials) error {
	n := int64(len(t.tokens))
	keys := []struct {
		key string
		id  *int32
	}{
		{"tokenizer.ggml.bos_token_id", &sp.bos},
		{"tokenizer.ggml.eos_token_id", &sp.eos},
		{"tokenizer.ggml.eot_token_id", &sp.eot},
		{"tokenizer.ggml.eom_token_id", &sp.eom},
		{"tokenizer.ggml.unknown_token_id", &sp.unk},
		{"tokenizer.ggml.fim_pre_token_id", &sp.fimPre},
		{"tokenizer.ggml.fim_suf_token_id", &sp.fimSuf},
		{"tokenizer.ggml.fim_mid_token_id", &sp.fimMid},
		{"tokenizer.ggml.fim_pad_token_id", &sp.fimPad},
		{"tokenizer.ggml.fim_rep_token_id", &sp.fimRep},
		{"tokenizer.ggml.fim_sep_token_id", &sp.fimSep},
		// Older names of the first three FIM tokens.
		{"tokenizer.ggml.prefix_token_id", &sp.fimPre},
		{"tokenizer.ggml.suffix_token_id", &sp.fimSuf},
		{"tokenizer.ggml.middle_token_id", &sp.fimMid},
	}
	for _, k := range keys {
		if int64(*k.id) >= n {
			*k.id = noToken
		}
		v, ok := f.Get(k.key)
		if !ok {
			continue
		}
		id, ok := v.Int()
		if !ok {
			return fmt.Errorf("%s has type %s, want an integer", k.key, v.Type)
		}
		// Like llama.cpp, an id outside the vocabulary (converters write
		// 0xFFFFFFFF for "none") leaves the default in place.
		if id >= 0 && id < n {
			*k.id = int32(id)
		}
	}

	if v, ok, err := boolKey(f, keyAddBOS); err != nil {
		return err
	} else if ok {
		t.addBOS = v
	}
	if v, ok, err := boolKey(f, keyAddEOS); err != nil {
		return err
	} else if ok {
		t.addEOS = v
	}
	if t.addBOS && sp.bos == noToken {
		return fmt.Errorf("%s is true but the vocabulary has no BOS token", keyAddBOS)
	}
	if t.addEOS && sp.eos == noToken {
		return fmt.Errorf("%s is true but the vocabulary has no EOS token", keyAddEOS)
	}

	byText := []struct {
		id    *int32
		texts map[string]bool
	}{
		{&sp.eot, eotTexts}, {&sp.eom, eomTexts},
		{&sp.fimPre, fimPreTexts}, {&sp.fimSuf, fimSufTexts}, {&sp.fimMid, fimMidTexts},
		{&sp.fimPad, fimPadTexts}, {&sp.fimRep, fimRepTexts}, {&sp.fimSep, fimSepTexts},
	}
	for i, text := range t.tokens {
		if !namedTexts[text] {
			continue
		}
		for _, b := range byText {
			if *b.id == noToken && b.texts[text] {
				*b.id = int32(i)
				t.attrs[i] |= attrControl
			}
		}
	}
	for i, text := range t.tokens {
		if t.attrs[i]&attrControl != 0 && strings.Contains(text, "unused") {
			t.attrs[i] |= attrUnused
		}
	}

	t.eog = map[int32]struct{}{}
	for _, id := range []int32{sp.fimPad, sp.fimRep, sp.fimSep} {
		if id != noToken {
			t.eog[id] = struct{}{}
		}
	}
	for i, text := range t.tokens {
		if eogTexts[text] {
			t.eog[int32(i)] = struct{}{}
			t.attrs[i] |= attrControl
		}
	}
	for _, text := range alwaysRendered {
		if id, ok := t.ids[text]; ok {
			t.attrs[id] = attrUserDefined
		}
	}
	for _, id := range []int32{sp.eos, sp.eot, sp.eom} {
		if id != noToken {
			t.eog[id] = struct{}{}
		}
	}
	t.dropEOGQuirks()

	t.bos, t.eos, t.eot, t.eom, t.unk = sp.bos, sp.eos, sp.eot, sp.eom, sp.unk
	return nil
}

// dropEOGQuirks undoes two of the text rules for vocabularies where they
// are wrong, as llama.cpp does: in gpt-oss (and solar-open) <|end|> ends a
// message, not the generation; with gemma4's <|tool_response> present, </s>
// is ordinary text.
func (t *Tokenizer) dropEOGQuirks() {
	has := map[string]int32{}
	for id := range t.eog {
		has[t.tokens[id]] = id
	}
	_, ret := has["<|return|>"]
	_, call := has["<|call|>"]
	_, calls := has["<|calls|>"]
	_, flush := has["<|flush|>"]
	if end, ok := has["<|end|>"]; ok && (ret && (call || calls) || (call || calls) && flush) {
		delete(t.eog, end)
		t.attrs[end] = attrUserDefined
	}
	if s, ok := has["</s>"]; ok {
		if _, tool := has["<|tool_response>"]; tool {
			delete(t.eog, s)
			t.attrs[s] = attrNormal
		}
	}
}

// applyNameQuirks sets the per-token attributes llama.cpp derives from the
// model's name: Phi-3 strips whitespace after its special tokens.
func (t *Tokenizer) applyNameQuirks(f *gguf.File) error {
	name, _, err := stringKey(f, keyName)
	if err != nil {
		return err
	}
	name = strings.ToLower(name)
	if !strings.Contains(name, "phi-3") && !strings.Contains(name, "phi3") {
		return nil
	}
	for i, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.attrs[i] |= attrRStrip
		}
	}
	if id, ok := t.ids["</s>"]; ok {
		t.attrs[id] |= attrRStrip
	}
	for _, text := range []string{"<unk>", "<s>", "<|endoftext|>"} {
		if id, ok := t.ids[text]; ok {
			t.attrs[id] &^= attrRStrip
		}
	}
	return nil
}

// buildCaches fills the special-token search order, the piece cache and the
// byte fallback table.
func (t *Tokenizer) buildCaches() {
	for i, a := range t.attrs {
		if a&(attrControl|attrUserDefined|attrUnknown) != 0 {
			t.special = append(t.special, int32(i))
		}
	}
	slices.SortStableFunc(t.special, func(a, b int32) int {
		return len(t.tokens[b]) - len(t.tokens[a])
	})

	t.pieceEnd = make([]uint32, len(t.tokens))
	var pieces []byte
	for i := range t.tokens {
		pieces = t.renderPiece(pieces, int32(i))
		t.pieceEnd[i] = uint32(len(pieces))
	}
	t.pieces = string(pieces)

	for b := range 256 {
		t.byteToken[b] = noToken
		if t.model == modelSPM {
			if id, ok := t.ids[fmt.Sprintf("<0x%02X>", b)]; ok {
				t.byteToken[b] = id
				continue
			}
		}
		if id, ok := t.ids[string([]byte{byte(b)})]; ok {
			t.byteToken[b] = id
		}
		t.charToken[b] = noToken
		if id, ok := t.ids[byteChars[b]]; ok {
			t.charToken[b] = id
		}
	}
}

// renderPiece appends the text token id stands for in output, control
// tokens included (llama.cpp's token_to_piece with special=true).
func (t *Tokenizer) renderPiece(dst []byte, id int32) []byte {
	text, a := t.tokens[id], t.attrs[id]
	switch {
	case a&(attrUnknown|attrControl|attrUserDefined) != 0:
		return append(dst, text...)
	case a&attrNormal != 0 && t.model == modelSPM:
		return append(dst, strings.ReplaceAll(text, spaceMark, " ")...)
	case a&attrNormal != 0:
		return appendByteLevelText(dst, text)
	case a&attrByte != 0:
		return append(dst, byteTokenValue(text))
	}
	return dst
}

// appendByteLevelText undoes the GPT-2 byte-to-unicode mapping of a BPE
// token. A code point outside the mapping is written out the way llama.cpp's
// llama_decode_text does.
func appendByteLevelText(dst []byte, text string) []byte {
	for i := 0; i < len(text); {
		r, n := decodeCpt(text, i)
		i += n
		if b, ok := unescapedByte(r); ok {
			dst = append(dst, b)
			continue
		}
		dst = append(dst, "[UNK_BYTE_0x"...)
		for _, c := range appendCpt(nil, r) {
			dst = fmt.Appendf(dst, "%02x", c)
		}
		dst = append(dst, text...)
		dst = append(dst, ']')
	}
	return dst
}

// byteTokenValue reads the byte of a "<0xNN>" token the way llama.cpp does
// (strtol of the two characters after "<0x"), so a malformed token gives
// the value of its leading hex digits.
func byteTokenValue(text string) byte {
	var v byte
	for i := 3; i < len(text) && i < 5; i++ {
		d, err := strconv.ParseUint(text[i:i+1], 16, 8)
		if err != nil {
			break
		}
		v = v<<4 | byte(d)
	}
	return v
}

func stringKey(f *gguf.File, key string) (string, bool, error) {
	v, ok := f.Get(key)
	if !ok {
		return "", false, nil
	}
	s, ok := v.String()
	if !ok {
		return "", false, fmt.Errorf("%s has type %s, want string", key, v.Type)
	}
	return s, true, nil
}

func arrayKey(f *gguf.File, key string) (gguf.Array, bool, error) {
	v, ok := f.Get(key)
	if !ok {
		return gguf.Array{}, false, nil
	}
	a, ok := v.Array()
	if !ok {
		return gguf.Array{}, false, fmt.Errorf("%s has type %s, want an array", key, v.Type)
	}
	return a, true, nil
}

func boolKey(f *gguf.File, key string) (bool, bool, error) {
	v, ok := f.Get(key)
	if !ok {
		return false, false, nil
	}
	b, ok := v.Bool()
	if !ok {
		return false, false, fmt.Errorf("%s has type %s, want bool", key, v.Type)
	}
	return b, true, nil
}
