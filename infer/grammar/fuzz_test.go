package grammar

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzFromJSONSchema compiles arbitrary schemas: a compilation either fails
// with ErrUnsupported or ErrInvalid, or gives an automaton that never
// panics, whose every complete value is valid JSON, and whose masks agree
// with stepping each token's bytes.
func FuzzFromJSONSchema(f *testing.F) {
	for _, s := range []string{
		person, `{"type":"object"}`, `true`, `{"enum":[1,"a",null,[true]]}`, `{"type":["integer","null"]}`,
		`{"anyOf":[{"type":"string","format":"date"},{"type":"array","items":{"type":"number"},"maxItems":2}]}`,
		`{"$defs":{"a":{"type":"boolean"}},"type":"object","properties":{"x":{"$ref":"#/$defs/a"}},"required":["x"]}`,
		`{"type":"string","format":"email"}`, `{"type":"string","pattern":"x"}`, `{"$ref":"#"}`,
	} {
		f.Add(s, []byte(`{"name":"a","age":1}`))
	}
	c := func(g *Grammar) *Checker { return newTestChecker(g) }
	f.Fuzz(func(t *testing.T, schema string, walk []byte) {
		g, err := FromJSONSchema([]byte(schema))
		if err != nil {
			if !errors.Is(err, ErrUnsupported) && !errors.Is(err, ErrInvalid) {
				t.Fatalf("%s: error %v is neither unsupported nor invalid", schema, err)
			}
			return
		}
		if ok, done := accepts(g, string(walk)); ok && done && !json.Valid(walk) {
			t.Fatalf("%s: accepted %q, which is not JSON", schema, walk)
		}
		// Walk the automaton, each step taking the allowed byte the input
		// points at: what it completes must be JSON.
		cur, next := g.start(), &state{}
		var out []byte
		for i := 0; i < 4*len(walk) && !g.accepting(cur); i++ {
			var ok []byte
			for b := range 256 {
				g.advance(next, cur, byte(b))
				if !next.empty() {
					ok = append(ok, byte(b))
				}
			}
			if len(ok) == 0 {
				t.Fatalf("%s: dead end after %q", schema, out)
			}
			b := ok[int(walk[i%len(walk)])%len(ok)]
			g.advance(next, cur, b)
			cur, next = next, cur
			out = append(out, b)
		}
		if g.accepting(cur) && !json.Valid(out) {
			t.Fatalf("%s: walked to %q, which is not JSON", schema, out)
		}
		mask := c(g).mask(cur)
		for id, p := range testPieces {
			if id == testEOG || p == "" {
				continue
			}
			if got, want := mask[id>>6]&(1<<(id&63)) != 0, g.acceptBytes(&state{}, cur, []byte(p)); got != want {
				t.Fatalf("%s after %q: token %q allowed=%v, its bytes say %v", schema, out, p, got, want)
			}
		}
	})
}
