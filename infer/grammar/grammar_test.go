package grammar

import (
	"errors"
	"strings"
	"testing"
)

// accepts runs the automaton over b: whether every byte is allowed, and
// whether the value is complete at the end.
func accepts(g *Grammar, b string) (prefix, complete bool) {
	cur, next := g.start(), &state{}
	for i := range len(b) {
		g.advance(next, cur, b[i])
		if next.empty() {
			return false, false
		}
		cur, next = next, cur
	}
	return true, g.accepting(cur)
}

func mustSchema(t *testing.T, schema string) *Grammar {
	t.Helper()
	g, err := FromJSONSchema([]byte(schema))
	if err != nil {
		t.Fatalf("compile %s: %v", schema, err)
	}
	return g
}

func checkValues(t *testing.T, g *Grammar, valid, invalid []string) {
	t.Helper()
	for _, v := range valid {
		if ok, done := accepts(g, v); !ok || !done {
			t.Errorf("%s: want accepted and complete, got prefix=%v complete=%v", v, ok, done)
		}
	}
	for _, v := range invalid {
		if ok, done := accepts(g, v); ok && done {
			t.Errorf("%s: want refused, got a complete value", v)
		}
	}
}

func TestJSONObject(t *testing.T) {
	valid := []string{
		`{}`, `{"a":1}`, ` {"a" : [1, -2.5e+3, 1E-99, 0.25, "x\u00e9\n", true, false, null, {"b":{}} , []]}`,
		`{"k":"é漢😀"}`, `{"a":"\"\\\/\b\f\n\r\t"}`,
		`{"":0,"a":-0}`,
	}
	invalid := []string{
		`{`, `[]`, `"a"`, `1`, `{"a":}`, `{"a":1,}`, `{"a":01}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`,
		"{\"a\":\"\x01\"}", `{"a":"\uD800"}`, "{\"a\":\"\xC0\x80\"}", "{\"a\":\"\xED\xA0\x80\"}", `{"a":"\x"}`,
		`{"a":tru}`, `{a:1}`, `{"a":1}}`, `{"a":1} `, `{"a":1}x`, `{"a"  :1}`, "{\"a\":\r1}",
		// Compact only: no newlines or tabs between tokens, pretty-printed or not.
		"{\n  \"a\": 1\n}", "{\"a\":\n1}", "{\"a\":\t1}", "{\"a\": [1,\n 2]}",
		`{"a":1234567890123456}`, `{"a":1.1234567890123456}`, `{"a":1e123}`,
	}
	checkValues(t, JSONObject(), valid, invalid)
	if ok, done := accepts(JSONObject(), `{"a":[1,`); !ok || done {
		t.Errorf(`{"a":[1, is a prefix, not complete: prefix=%v complete=%v`, ok, done)
	}
}

func TestDepthIsBounded(t *testing.T) {
	g := JSONObject()
	deep := strings.Repeat(`{"a":`, MaxDepth)
	if ok, _ := accepts(g, deep); ok {
		t.Errorf("%d nested objects accepted; the stack is bounded at %d", MaxDepth, MaxDepth)
	}
	if ok, _ := accepts(g, strings.Repeat(`{"a":`, MaxDepth-2)); !ok {
		t.Errorf("%d nested objects refused", MaxDepth-2)
	}
}

const person = `{
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 5},
    "age": {"type": "integer", "description": "years"},
    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
    "nick": {"type": ["string", "null"]}
  },
  "required": ["name", "age"],
  "additionalProperties": false
}`

func TestSchemaObject(t *testing.T) {
	g := mustSchema(t, person)
	checkValues(t, g, []string{
		`{"name":"Bob","age":3}`, `{"name":"Bob","age":-0,"tags":["a"]}`, `{"name":"é漢","age":1,"tags":["a","b"],"nick":null}`,
		`{"name":"B","age":1,"nick":"x"}`, `{ "name": "abcde", "age": 12 }`, `{"name":"\u00e9","age":2,"nick":"y"}`,
	}, []string{
		`{"name":"Bob"}`, `{"age":3,"name":"Bob"}`, `{"name":"","age":3}`, `{"name":"abcdef","age":3}`,
		`{"name":"Bob","age":3,"tags":[]}`, `{"name":"Bob","age":3,"tags":["a","b","a"]}`, `{"name":"Bob","age":3,"tags":["c"]}`,
		`{"name":"Bob","age":3,"x":1}`, `{"name":"Bob","age":1.5}`, `{"name":"Bob","age":1e2}`, `{"name":"Bob","age":3,"nick":1}`,
		`{"name":"Bob","age":3,"nick":"x","tags":["a"]}`, `{}`,
	})
}

func TestSchemaAnyOfAndRefs(t *testing.T) {
	g := mustSchema(t, `{
	  "$defs": {"pa": {"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false},
	            "pb": {"type":"object","properties":{"b":{"type":"boolean"}},"required":["b"],"additionalProperties":false}},
	  "type":"object",
	  "properties": {"v": {"anyOf": [{"$ref":"#/$defs/pa"}, {"$ref":"#/$defs/pb"}, {"type":"string"}, {"const": 7}]},
	                 "w": {"$ref":"#/$defs/pa"}},
	  "required": ["v", "w"]
	}`)
	checkValues(t, g, []string{
		`{"v":{"a":1},"w":{"a":2}}`, `{"v":{"b":true},"w":{"a":2}}`, `{"v":"s","w":{"a":0}}`, `{"v":7,"w":{"a":0}}`,
	}, []string{
		`{"v":{"a":true},"w":{"a":2}}`, `{"v":{"b":1},"w":{"a":2}}`, `{"v":{},"w":{"a":2}}`, `{"v":8,"w":{"a":0}}`, `{"v":70,"w":{"a":0}}`,
	})
}

func TestSchemaFreeObjectsAndEnums(t *testing.T) {
	checkValues(t, mustSchema(t, `{"type":"object","additionalProperties":{"type":"integer"}}`),
		[]string{`{}`, `{"x":1,"y":-2}`}, []string{`{"x":"1"}`, `[]`})
	checkValues(t, mustSchema(t, `{"enum":["red",1,12,null,{"a":[true]}]}`),
		[]string{`"red"`, `1`, `12`, `null`, `{"a":[true]}`}, []string{`"re"`, `2`, `121`, `{"a":[ true]}`})
	checkValues(t, mustSchema(t, `{"type":"string","enum":["x",1]}`), []string{`"x"`}, []string{`1`})
	checkValues(t, mustSchema(t, `{"type":"array","items":{"type":"number"},"maxItems":0}`), []string{`[]`}, []string{`[1]`})
	checkValues(t, mustSchema(t, `{"anyOf":[{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]},
		{"type":"object","properties":{"a":{"type":"string"},"b":{"const":true}},"required":["a","b"]}]}`),
		[]string{`{"a":1}`, `{"a":"x","b":true}`}, []string{`{"a":"x"}`, `{"a":1,"b":true}`})
	checkValues(t, mustSchema(t, `{"type":"object","properties":{"été":{"type":"string","maxLength":2},"a\"b":{"type":"null"}},"required":["a\"b"]}`),
		[]string{`{"été":"\u00e9","a\"b":null}`, `{"a\"b":null}`}, []string{`{"été":"abc","a\"b":null}`, `{"ete":"a","a\"b":null}`})
	checkValues(t, mustSchema(t, `{"allOf":[{"type":"array","items":{"const":1},"uniqueItems":false}]}`),
		[]string{`[]`, `[1,1]`}, []string{`[2]`})
	checkValues(t, mustSchema(t, `true`), []string{`[1]`, `"x"`, `{"a":null}`, `-1.5`}, []string{`[`, `tru`})
}

func TestFormats(t *testing.T) {
	cases := map[string]struct{ valid, invalid []string }{
		"date": {[]string{"2024-02-28", "1999-12-31", "2024-04-30"},
			[]string{"2024-02-30", "2024-13-01", "2024-04-31", "2024-00-10", "24-01-01", "2024-1-01"}},
		"date-time": {[]string{"2024-01-31T23:59:59Z", "2024-01-31T00:00:00.123+01:00", "2024-06-30T12:30:00-05:30"},
			[]string{"2024-01-31T24:00:00Z", "2024-01-31T23:60:00Z", "2024-01-31 23:59:59Z", "2024-01-31T23:59:59"}},
		"time":  {[]string{"23:59:59Z", "08:00:00.5+02:00"}, []string{"8:00:00Z", "23:59Z"}},
		"uuid":  {[]string{"123e4567-e89b-12d3-a456-426614174000", "ABCDEF01-2345-6789-abcd-ef0123456789"}, []string{"123e4567e89b12d3a456426614174000", "123e4567-e89b-12d3-a456-42661417400g"}},
		"email": {[]string{"a@b.co", "first.last+x@mail.example.org"}, []string{"a@b", "@b.co", "a..b@c.de", "a@b..co", ".a@b.co"}},
	}
	for f, c := range cases {
		g := mustSchema(t, `{"type":"string","format":"`+f+`"}`)
		quote := func(s []string) []string {
			out := make([]string, len(s))
			for i, x := range s {
				out[i] = `"` + x + `"`
			}
			return out
		}
		checkValues(t, g, quote(c.valid), quote(c.invalid))
	}
}

func TestRefusedSchemas(t *testing.T) {
	cases := []struct {
		schema string
		err    error
		names  string // what the message must name
	}{
		{`{"type":"string","pattern":"^a$"}`, ErrUnsupported, `"pattern"`},
		{`{"type":"integer","minimum":0}`, ErrUnsupported, `"minimum"`},
		{`{"oneOf":[{"type":"string"}]}`, ErrUnsupported, `"oneOf"`},
		{`{"type":"object","properties":{"n":{"$ref":"#"}}}`, ErrUnsupported, `recursive`},
		{`{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}`, ErrUnsupported, `recursive`},
		{`{"type":"string","format":"ipv4"}`, ErrUnsupported, `"ipv4"`},
		{`{"type":"array","items":[{"type":"string"}]}`, ErrUnsupported, `tuples`},
		{`{"$ref":"https://example.com/s.json"}`, ErrUnsupported, `https://example.com/s.json`},
		{`{"type":"object","required":["x"],"additionalProperties":false}`, ErrUnsupported, `"x"`},
		{`{"type":"array","minItems":3,"maxItems":2}`, ErrUnsupported, `minItems`},
		{`{"type":"string","format":"date","maxLength":3}`, ErrUnsupported, `maxLength`},
		{`{"enum":[1],"minimum":0}`, ErrUnsupported, `"minimum"`},
		{`{"type":"object","anyOf":[{"type":"string"}]}`, ErrUnsupported, `"type"`},
		{`{"allOf":[{"type":"string"},{"maxLength":3}]}`, ErrUnsupported, `"allOf"`},
		{`{"type":"array","uniqueItems":true}`, ErrUnsupported, `"uniqueItems"`},
		{`{"minLength":1,"items":{}}`, ErrUnsupported, `several types`},
		{`false`, ErrUnsupported, `false`},
		{`{"type":"str"}`, ErrInvalid, `"str"`},
		{`{"type":"string","maxLength":-1}`, ErrInvalid, `maxLength`},
		{`{"$ref":"#/$defs/missing"}`, ErrInvalid, `#/$defs/missing`},
		{`[1]`, ErrInvalid, `object or a boolean`},
		{`{"type":`, ErrInvalid, ``},
		{`{} {}`, ErrInvalid, `after`},
		{`{"enum":[]}`, ErrInvalid, `enum`},
		{`{"type":"string","enum":[1]}`, ErrUnsupported, `type`},
	}
	for _, c := range cases {
		_, err := FromJSONSchema([]byte(c.schema))
		if !errors.Is(err, c.err) || !strings.Contains(err.Error(), c.names) {
			t.Errorf("%s: got %v, want %v naming %s", c.schema, err, c.err, c.names)
		}
	}
	deep := strings.Repeat(`{"type":"array","items":`, MaxDepth) + `{}` + strings.Repeat(`}`, MaxDepth)
	if _, err := FromJSONSchema([]byte(deep)); !errors.Is(err, ErrUnsupported) {
		t.Errorf("a schema nested %d deep: got %v, want ErrUnsupported", MaxDepth, err)
	}
}

// testVocab is a small vocabulary with multi-byte tokens.
var testPieces = []string{"", "{", "}", `"`, "a", `"a"`, ":", "1", " ", `{"`, "}x", `":`, "12", "\n", "é", "\xC3", "\xA9", ","}

const testEOG = 0

func newTestChecker(g *Grammar) *Checker {
	pieces := make([][]byte, len(testPieces))
	for i, p := range testPieces {
		pieces[i] = []byte(p)
	}
	return NewChecker(g, NewVocab(pieces, []int32{testEOG}))
}

func allowed(mask []uint64) []string {
	var out []string
	for id, p := range testPieces {
		if mask[id>>6]&(1<<(id&63)) != 0 {
			if id == testEOG {
				p = "<eog>"
			}
			out = append(out, p)
		}
	}
	return out
}

func TestMasks(t *testing.T) {
	c := newTestChecker(JSONObject())
	m := c.NewMatcher()
	want := func(step string, w ...string) {
		t.Helper()
		if got := allowed(m.Mask()); strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("%s: allowed %q, want %q", step, got, w)
		}
	}
	accept := func(id int32) {
		t.Helper()
		if err := m.Accept(id); err != nil {
			t.Fatalf("accept %q: %v", testPieces[id], err)
		}
	}
	want("start", "{", " ", `{"`)
	accept(9) // {"
	// In a key: anything but a control character; "a" would close it and
	// go on with a, not ':'.
	want(`after {"`, "{", "}", `"`, "a", ":", "1", " ", `{"`, "}x", `":`, "12", "é", "\xC3", ",")
	accept(15) // half of é
	want("inside a character", "\xA9")
	accept(16)
	accept(11) // ":
	want("before a value", "{", `"`, `"a"`, "1", " ", `{"`, `":`, "12")
	accept(7)
	want("in a number", "}", "1", " ", "12", ",")
	accept(2)
	want("complete", "<eog>")
	if !m.Complete() {
		t.Errorf("the value is complete but Complete is false")
	}
	if err := m.Accept(8); !errors.Is(err, ErrRejected) {
		t.Errorf("a space after the value: got %v, want ErrRejected", err)
	}
	accept(testEOG)
	if err := m.Accept(1); !errors.Is(err, ErrRejected) {
		t.Errorf("a token after the end: got %v, want ErrRejected", err)
	}
	m2 := c.NewMatcher()
	if err := m2.Accept(testEOG); !errors.Is(err, ErrRejected) {
		t.Errorf("end before the value: got %v, want ErrRejected", err)
	}
	if err := m2.Accept(2); !errors.Is(err, ErrRejected) {
		t.Errorf("} first: got %v, want ErrRejected", err)
	}
}

// TestMaskMatchesBytes checks the trie walk against stepping every token
// on its own, in states along a schema's values.
func TestMaskMatchesBytes(t *testing.T) {
	g := mustSchema(t, `{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}}},"required":["a"]}`)
	c := newTestChecker(g)
	for _, prefix := range []string{"", "{", `{"a":[`, `{"a":[1`, `{"a":[12,`, `{"a":[1]`, `{"a":[1]}`} {
		cur := g.start()
		for i := range len(prefix) {
			next := &state{}
			g.advance(next, cur, prefix[i])
			cur = next
		}
		mask := c.mask(cur)
		for id, p := range testPieces {
			want := id == testEOG && g.accepting(cur)
			if id != testEOG && p != "" {
				want = g.acceptBytes(&state{}, cur, []byte(p))
			}
			if got := mask[id>>6]&(1<<(id&63)) != 0; got != want {
				t.Errorf("after %s: token %q allowed=%v, stepping its bytes says %v", prefix, p, got, want)
			}
		}
	}
}
