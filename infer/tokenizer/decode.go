package tokenizer

// Decode turns ids back into text as llama.cpp's llama_detokenize does with
// remove_special and unparse_special off: the pieces of the tokens (control
// and unknown tokens give nothing, ids out of range are skipped), without
// the one leading space that add_space_prefix put before the first token,
// and, for vocabularies that ask for it (GPT-2 style BPE), with
// clean_up_tokenization_spaces applied (" ," -> ",", " 's" -> "'s", ...).
//
// A BOS in front takes the place of the first token, so the space after it
// stays, as in llama.cpp. Byte tokens may leave invalid UTF-8 in the result;
// use StreamDecoder to render text as it is generated.
func (t *Tokenizer) Decode(ids []int32) string {
	var b []byte
	removeSpace := t.addSpacePrefix
	for _, id := range ids {
		p := t.piece(id)
		if removeSpace && len(p) > 0 && p[0] == ' ' {
			p = p[1:]
		}
		removeSpace = false
		b = append(b, p...)
	}
	if t.cleanSpaces {
		b = cleanUpSpaces(b)
	}
	return string(b)
}

// cleanUpSpaces is the three clean-up passes of llama.cpp's detokenize,
// kept in their in-place form so that they treat overlapping patterns the
// same way.
func cleanUpSpaces(text []byte) []byte {
	total := len(text)

	// " ?", " !", " .", " ," lose the space.
	total1 := total
	total = min(total, 1)
	for i := 1; i < total1; i++ {
		x := text[i]
		if text[i-1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') {
			total--
		}
		text[total] = x
		total++
	}

	// " ' " becomes "'".
	total2 := total
	total = min(total, 1)
	for i := 1; i < total2; i++ {
		x := text[i]
		if x == '\'' && i+1 < total2 && text[i-1] == ' ' && text[i+1] == ' ' {
			total--
			i++
			text[i] = 0
		}
		text[total] = x
		total++
	}

	// " 's", " 'm", " 're", " 've" lose the space.
	total3 := total
	total = min(total, 1)
	for i := 1; i < total3; i++ {
		x := text[i]
		if text[i-1] == ' ' && x == '\'' && i+1 < total3 {
			switch x1 := text[i+1]; {
			case x1 == 's' || x1 == 'm':
				total--
			case x1 == 't' || x1 == 'd':
			case i+2 < total3:
				x2 := text[i+2]
				if x1 == 'r' && x2 == 'e' || x1 == 'v' && x2 == 'e' {
					total--
				}
			}
		}
		text[total] = x
		total++
	}
	return text[:total]
}
