package schemas

import (
	"encoding/json"
	"math"
	"strconv"
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

// decodePlainEvent reads one event line of a plain event (see
// plainParser). It reports false for anything else, which encoding/json
// then reads (or refuses) as before; what it accepts, encoding/json reads
// to the same Event.
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
