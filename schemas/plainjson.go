package schemas

import (
	"bytes"
	"strconv"
	"time"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// plainParser reads the plain JSON that the hand-written event and job
// readers take: objects whose keys they name, each once and without
// escapes; strings; numbers; arrays; no null. Whatever else it meets makes
// the reader report false, and encoding/json reads the input instead.
type plainParser struct {
	b []byte
	i int
}

func (p *plainParser) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\n' || p.b[p.i] == '\r') {
		p.i++
	}
}

func (p *plainParser) byte(c byte) bool {
	p.space()
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}

// object reads {"key": value, ...}, value read by field, which reports
// false for a key it does not take. A key seen twice is refused:
// encoding/json would merge the second into the first.
func (p *plainParser) object(field func(key []byte) bool) bool {
	if !p.byte('{') {
		return false
	}
	if p.byte('}') {
		return true
	}
	var seen [32][]byte // more keys than a job or an event has fields cannot all be known and distinct
	for n := 0; ; n++ {
		p.space()
		key, ok := p.raw()
		if !ok || n == len(seen) || !p.byte(':') {
			return false
		}
		for _, k := range seen[:n] {
			if bytes.Equal(k, key) {
				return false
			}
		}
		seen[n] = key
		p.space()
		if !field(key) {
			return false
		}
		if p.byte('}') {
			return true
		}
		if !p.byte(',') {
			return false
		}
	}
}

// token reads a string token, quotes included, and reports whether it
// has escapes. A raw control byte or a missing end quote is no string.
func (p *plainParser) token() (tok []byte, escaped, ok bool) {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return nil, false, false
	}
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			tok = p.b[p.i : j+1]
			p.i = j + 1
			return tok, escaped, true
		case c == '\\':
			escaped = true
			j++ // the escaped byte cannot end the string
		case c < 0x20:
			return nil, false, false
		}
	}
	return nil, false, false
}

// raw reads a string without escapes, in valid UTF-8: a key, or a value
// compared with known ones.
func (p *plainParser) raw() ([]byte, bool) {
	tok, escaped, ok := p.token()
	if !ok || escaped {
		return nil, false
	}
	s := tok[1 : len(tok)-1]
	return s, utf8.Valid(s)
}

// str reads a string value.
func (p *plainParser) str(dst *string) bool {
	tok, escaped, ok := p.token()
	if !ok {
		return false
	}
	if s := tok[1 : len(tok)-1]; !escaped && utf8.Valid(s) {
		*dst = string(s)
		return true
	}
	*dst, ok = unquote(tok)
	return ok
}

// unquote reads a string token with escapes or bytes that are not UTF-8,
// as encoding/json does: the escapes JSON has (others are refused),
// surrogate pairs joined, and a lone surrogate or a byte that is not
// UTF-8 read as U+FFFD.
func unquote(tok []byte) (string, bool) {
	s := tok[1 : len(tok)-1]
	b := make([]byte, 0, len(s)+utf8.UTFMax)
	for r := 0; r < len(s); {
		switch c := s[r]; {
		case c == '\\':
			if r+1 >= len(s) {
				return "", false
			}
			switch e := s[r+1]; e {
			case '"', '\\', '/':
				b = append(b, e)
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := hex4(s[r+2:])
				if rr < 0 {
					return "", false
				}
				r += 6
				if utf16.IsSurrogate(rr) {
					if rr1 := hex4(s[min(r+2, len(s)):]); r+1 < len(s) && s[r] == '\\' && s[r+1] == 'u' && rr1 >= 0 {
						if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
							b = utf8.AppendRune(b, dec)
							r += 6
							continue
						}
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
				continue
			default:
				return "", false
			}
			r += 2
		case c < 0x20:
			return "", false
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			b = utf8.AppendRune(b, rr)
			r += size
		}
	}
	return string(b), true
}

// hex4 reads four hex digits, or returns -1.
func hex4(s []byte) rune {
	if len(s) < 4 {
		return -1
	}
	var r rune
	for _, c := range s[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// number reads a JSON number and reports whether it is an integer.
func (p *plainParser) number() (text []byte, integer, ok bool) {
	start, b := p.i, p.b
	i := start
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return nil, false, false
	}
	integer = true
	if i < len(b) && b[i] == '.' {
		integer = false
		i++
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		integer = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			return nil, false, false
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	p.i = i
	return b[start:i], integer, true
}

// integer reads an integer that fits in bits.
func (p *plainParser) integer(bits int) (int64, bool) {
	text, integer, ok := p.number()
	if !ok || !integer {
		return 0, false
	}
	n, err := strconv.ParseInt(string(text), 10, bits)
	return n, err == nil
}

func (p *plainParser) int(dst *int) bool {
	n, ok := p.integer(strconv.IntSize)
	*dst = int(n)
	return ok
}

func (p *plainParser) float(dst *float64) bool {
	text, _, ok := p.number()
	if !ok {
		return false
	}
	f, err := strconv.ParseFloat(string(text), 64)
	*dst = f
	return err == nil
}

// array reads [item, ...], each item read by item.
func (p *plainParser) array(item func() bool) bool {
	if !p.byte('[') {
		return false
	}
	if p.byte(']') {
		return true
	}
	for {
		p.space()
		if !item() {
			return false
		}
		if p.byte(']') {
			return true
		}
		if !p.byte(',') {
			return false
		}
	}
}

// list reads an array into *dst, each item read by read; [] is an empty
// slice, not nil, as encoding/json makes it.
func list[T any](p *plainParser, dst *[]T, read func(*T) bool) bool {
	*dst = []T{}
	return p.array(func() bool {
		var v T
		ok := read(&v)
		*dst = append(*dst, v)
		return ok
	})
}

// time reads a time as encoding/json does, by time.Time's UnmarshalJSON
// on the quoted string.
func (p *plainParser) time(t *time.Time) bool {
	tok, _, ok := p.token()
	return ok && t.UnmarshalJSON(tok) == nil
}
