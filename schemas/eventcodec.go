package schemas

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Every token a worker makes is encoded once by the worker and decoded
// and encoded again by the queen; through encoding/json's reflection that
// was 6% of the worker's CPU and 4% of rbee up's on 1-token jobs. The
// plain events (tokens and ends: strings, integers, usage and timings) are
// written and read here by hand, with exactly encoding/json's result
// (FuzzEventCodec compares them); anything else goes through encoding/json.

// AppendEvent appends ev's JSON object to b: json.Marshal(ev), byte for
// byte.
func AppendEvent(b []byte, ev *Event) ([]byte, error) { return ev.appendJSON(b) }

// plain reports whether e holds only what appendJSON writes itself.
func (e *Event) plain() bool {
	return e.Logprobs == nil && len(e.StopReasons) == 0 && len(e.ToolCalls) == 0 && len(e.Embeddings) == 0 &&
		len(e.Tokens) == 0 && len(e.Pieces) == 0 && e.Error == nil &&
		(e.Timings == nil || e.Timings.finite())
}

func (t *Timings) finite() bool {
	for _, f := range [...]float64{t.QueueMillis, t.TimeToFirstMillis, t.PromptTokensPerSec, t.DecodeTokensPerSec, t.TotalMillis} {
		if math.IsInf(f, 0) || math.IsNaN(f) {
			return false
		}
	}
	return true
}

// appendJSON appends e's JSON object to b, fields in the struct's order,
// empty ones left out as their omitempty tags say.
func (e *Event) appendJSON(b []byte) ([]byte, error) {
	if !e.plain() {
		data, err := json.Marshal(e)
		return append(b, data...), err
	}
	b = append(b, `{"job_id":`...)
	b = appendJSONString(b, e.JobID)
	b = append(b, `,"seq":`...)
	b = strconv.AppendInt(b, int64(e.Seq), 10)
	b = append(b, `,"type":`...)
	b = appendJSONString(b, string(e.Type))
	b = append(b, `,"delivery":`...)
	b = strconv.AppendInt(b, int64(e.Delivery), 10)
	if e.WorkerID != "" {
		b = append(b, `,"worker_id":`...)
		b = appendJSONString(b, e.WorkerID)
	}
	if e.Text != "" {
		b = append(b, `,"text":`...)
		b = appendJSONString(b, e.Text)
	}
	if e.TokenID != nil {
		b = append(b, `,"token_id":`...)
		b = strconv.AppendInt(b, int64(*e.TokenID), 10)
	}
	if e.Index != 0 {
		b = append(b, `,"index":`...)
		b = strconv.AppendInt(b, int64(e.Index), 10)
	}
	if e.StopReason != "" {
		b = append(b, `,"stop_reason":`...)
		b = appendJSONString(b, e.StopReason)
	}
	if u := e.Usage; u != nil {
		b = append(b, `,"usage":{"prompt_tokens":`...)
		b = strconv.AppendInt(b, int64(u.PromptTokens), 10)
		b = append(b, `,"completion_tokens":`...)
		b = strconv.AppendInt(b, int64(u.CompletionTokens), 10)
		b = append(b, `,"total_tokens":`...)
		b = strconv.AppendInt(b, int64(u.TotalTokens), 10)
		b = append(b, '}')
	}
	if t := e.Timings; t != nil {
		b = append(b, `,"timings":{"queue_ms":`...)
		b = appendJSONFloat(b, t.QueueMillis)
		b = append(b, `,"time_to_first_token_ms":`...)
		b = appendJSONFloat(b, t.TimeToFirstMillis)
		b = append(b, `,"prompt_tokens_per_second":`...)
		b = appendJSONFloat(b, t.PromptTokensPerSec)
		b = append(b, `,"decode_tokens_per_second":`...)
		b = appendJSONFloat(b, t.DecodeTokensPerSec)
		b = append(b, `,"total_ms":`...)
		b = appendJSONFloat(b, t.TotalMillis)
		b = append(b, '}')
	}
	if e.Content != "" {
		b = append(b, `,"content":`...)
		b = appendJSONString(b, e.Content)
	}
	return append(b, '}'), nil
}

// appendJSONString appends s quoted. Text that encoding/json would escape
// (quotes, controls, HTML's <, > and &, U+2028, U+2029, bad UTF-8) is
// rare in events, and left to it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				return appendEscaped(b, s)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			return appendEscaped(b, s)
		}
		i += size
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

func appendEscaped(b []byte, s string) []byte {
	data, _ := json.Marshal(s) // a string always encodes
	return append(b, data...)
}

// appendJSONFloat appends a finite f as encoding/json writes a float64:
// the shortest decimal, in exponent form below 1e-6 and from 1e21, with
// a one-digit negative exponent written without its leading zero.
func appendJSONFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// decodePlainEvent reads one event line of a plain event: exactly its
// field names, each once, keys without escapes, no null. It reports false
// for anything else, which encoding/json then
// reads (or refuses) as before; what it accepts, encoding/json reads to
// the same Event.
func decodePlainEvent(line []byte) (Event, bool) {
	var ev Event
	p := plainParser{b: line}
	ok := p.object(func(key []byte) bool {
		switch string(key) {
		case "job_id":
			return p.str(&ev.JobID)
		case "seq":
			return p.int(&ev.Seq)
		case "type":
			s, ok := p.raw()
			ev.Type = eventType(s)
			return ok
		case "delivery":
			return p.int(&ev.Delivery)
		case "worker_id":
			return p.str(&ev.WorkerID)
		case "text":
			return p.str(&ev.Text)
		case "token_id":
			n, ok := p.integer(32)
			id := int32(n)
			ev.TokenID = &id
			return ok
		case "index":
			return p.int(&ev.Index)
		case "stop_reason":
			return p.str(&ev.StopReason)
		case "usage":
			ev.Usage = new(Usage)
			return p.usage(ev.Usage)
		case "timings":
			ev.Timings = new(Timings)
			return p.timings(ev.Timings)
		case "content":
			return p.str(&ev.Content)
		}
		return false
	})
	p.space()
	return ev, ok && p.i == len(p.b)
}

// eventType is s as an EventType, without a copy for the known ones.
func eventType(s []byte) EventType {
	for _, t := range [...]EventType{EventToken, EventEnd, EventError} {
		if string(s) == string(t) {
			return t
		}
	}
	return EventType(s)
}

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

func (p *plainParser) usage(u *Usage) bool {
	return p.object(func(key []byte) bool {
		switch string(key) {
		case "prompt_tokens":
			return p.int(&u.PromptTokens)
		case "completion_tokens":
			return p.int(&u.CompletionTokens)
		case "total_tokens":
			return p.int(&u.TotalTokens)
		}
		return false
	})
}

func (p *plainParser) timings(t *Timings) bool {
	return p.object(func(key []byte) bool {
		switch string(key) {
		case "queue_ms":
			return p.float(&t.QueueMillis)
		case "time_to_first_token_ms":
			return p.float(&t.TimeToFirstMillis)
		case "prompt_tokens_per_second":
			return p.float(&t.PromptTokensPerSec)
		case "decode_tokens_per_second":
			return p.float(&t.DecodeTokensPerSec)
		case "total_ms":
			return p.float(&t.TotalMillis)
		}
		return false
	})
}
