package grammar

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// JSONObject returns the grammar of any JSON object (OpenAI's
// response_format {"type":"json_object"}).
func JSONObject() *Grammar {
	c := newCompiler()
	m, err := c.g.add(node{kind: kMap, elem: c.anyValue()})
	if err != nil {
		panic(err) // a handful of nodes
	}
	return c.finish(m, "json_object")
}

// FromJSONSchema compiles a JSON Schema. It supports the types object,
// array, string, number, integer, boolean and null; properties, required
// and additionalProperties; items, minItems and maxItems; minLength,
// maxLength and the formats date, time, date-time, uuid and email; enum,
// const, anyOf, allOf of one schema, and $ref to $defs or definitions
// without cycles.
// Annotations (title, description, default, ...) are ignored. Any other
// keyword fails with ErrUnsupported, naming it.
//
// Object properties are generated in the schema's order; properties that
// are neither declared nor required are never generated, which every
// additionalProperties setting allows.
func FromJSONSchema(schema []byte) (*Grammar, error) {
	root, err := parseJSON(schema)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	c := newCompiler()
	c.root = root
	value, err := c.compile(root, "#", 0)
	if err != nil {
		return nil, err
	}
	var canon bytes.Buffer
	if err := json.Compact(&canon, schema); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return c.finish(value, "json_schema:"+canon.String()), nil
}

type compiler struct {
	g      *Grammar
	root   jv
	refs   map[string]int32
	active map[string]bool
	any    int32 // the node of any value; -1 until needed
}

func newCompiler() *compiler {
	c := &compiler{g: &Grammar{}, refs: map[string]int32{}, active: map[string]bool{}, any: -1}
	// Node 0 is the root, filled in by finish; node 1 the free keys.
	c.g.nodes = append(c.g.nodes, node{kind: kRoot}, node{kind: kString, maxLen: -1})
	return c
}

func (c *compiler) finish(value int32, key string) *Grammar {
	c.g.nodes[0].elem = value
	c.g.root = 0
	c.g.key = key
	c.g.computeFirst()
	return c.g
}

// anyValue is the node of any JSON value, made once.
func (c *compiler) anyValue() int32 {
	if c.any >= 0 {
		return c.any
	}
	g := c.g
	choice, _ := g.add(node{kind: kChoice})
	c.any = choice
	obj, _ := g.add(node{kind: kMap, elem: choice})
	arr, _ := g.add(node{kind: kArray, elem: choice, maxItems: -1})
	str, _ := g.add(node{kind: kString, maxLen: -1})
	num, _ := g.add(node{kind: kNumber})
	lits, _ := c.literal([]string{"true", "false", "null"})
	g.nodes[choice].alts = []int32{obj, arr, str, num, lits}
	return choice
}

func (c *compiler) literal(values []string) (int32, error) {
	root := c.g.newTrieNode()
	for _, v := range values {
		c.g.insert(root, []byte(v))
	}
	return c.g.add(node{kind: kLiteral, lit: root})
}

func unsupported(path, format string, args ...any) error {
	return fmt.Errorf("%w: at %s: %s", ErrUnsupported, path, fmt.Sprintf(format, args...))
}

func invalid(path, format string, args ...any) error {
	return fmt.Errorf("%w: at %s: %s", ErrInvalid, path, fmt.Sprintf(format, args...))
}

// annotations do not change which values a schema accepts.
var annotations = map[string]bool{
	"title": true, "description": true, "$schema": true, "$id": true, "$comment": true,
	"default": true, "examples": true, "deprecated": true, "readOnly": true, "writeOnly": true,
	"$defs": true, "definitions": true,
}

var supported = map[string]bool{
	"type": true, "properties": true, "required": true, "additionalProperties": true,
	"items": true, "minItems": true, "maxItems": true,
	"minLength": true, "maxLength": true, "format": true,
	"enum": true, "const": true, "anyOf": true, "allOf": true, "$ref": true,
}

var typeKeywords = map[string][]string{
	"object": {"properties", "required", "additionalProperties"},
	"array":  {"items", "minItems", "maxItems"},
	"string": {"minLength", "maxLength", "format"},
}

func (c *compiler) compile(s jv, path string, depth int) (int32, error) {
	if depth > MaxDepth-2 {
		return 0, unsupported(path, "values nest deeper than %d levels", MaxDepth-2)
	}
	switch s.kind {
	case 'b':
		if s.b {
			return c.anyValue(), nil
		}
		return 0, unsupported(path, "the schema false accepts no value")
	case 'o':
	default:
		return 0, invalid(path, "a schema must be an object or a boolean")
	}
	var constraints []string
	for _, m := range s.obj {
		switch {
		case annotations[m.name]:
		case m.name == "uniqueItems" && m.value.kind == 'b' && !m.value.b:
			// uniqueItems false asks for nothing.
		case supported[m.name]:
			constraints = append(constraints, m.name)
		default:
			return 0, unsupported(path, "keyword %q is not supported", m.name)
		}
	}
	only := func(keyword string, allowed ...string) error {
		for _, k := range constraints {
			if k != keyword && !slices.Contains(allowed, k) {
				return unsupported(path, "keyword %q next to %q is not supported", k, keyword)
			}
		}
		return nil
	}
	if ref, ok := s.get("$ref"); ok {
		if err := only("$ref"); err != nil {
			return 0, err
		}
		return c.ref(ref, path, depth)
	}
	if all, ok := s.get("allOf"); ok {
		// A one-schema allOf is how some generators wrap a $ref; more would
		// need an intersection of automata.
		if all.kind != 'a' || len(all.arr) != 1 {
			return 0, unsupported(path, "keyword \"allOf\" is supported with one schema only")
		}
		if err := only("allOf"); err != nil {
			return 0, err
		}
		return c.compile(all.arr[0], path+"/allOf/0", depth)
	}
	if any, ok := s.get("anyOf"); ok {
		if err := only("anyOf"); err != nil {
			return 0, err
		}
		return c.anyOf(any, path, depth)
	}
	types, err := schemaTypes(s, path)
	if err != nil {
		return 0, err
	}
	for _, kw := range []string{"enum", "const"} {
		if v, ok := s.get(kw); ok {
			if err := only(kw, "type"); err != nil {
				return 0, err
			}
			return c.enum(kw, v, types, path)
		}
	}
	if types == nil {
		for t, kws := range typeKeywords {
			for _, k := range kws {
				if _, ok := s.get(k); ok && !slices.Contains(types, t) {
					types = append(types, t)
				}
			}
		}
		if len(types) > 1 {
			return 0, unsupported(path, "keywords of several types (%s) without \"type\"", strings.Join(types, ", "))
		}
		if len(types) == 0 {
			return c.anyValue(), nil
		}
	}
	if slices.Contains(types, "number") {
		types = slices.DeleteFunc(types, func(t string) bool { return t == "integer" })
	}
	var alts []int32
	for _, t := range types {
		n, err := c.typed(t, s, path, depth)
		if err != nil {
			return 0, err
		}
		alts = append(alts, n)
	}
	return c.choice(alts)
}

// schemaTypes reads "type": nil when absent.
func schemaTypes(s jv, path string) ([]string, error) {
	t, ok := s.get("type")
	if !ok {
		return nil, nil
	}
	var list []jv
	switch t.kind {
	case 's':
		list = []jv{t}
	case 'a':
		list = t.arr
	default:
		return nil, invalid(path+"/type", "want a type name or an array of them")
	}
	if len(list) == 0 {
		return nil, invalid(path+"/type", "empty list of types")
	}
	var types []string
	for _, v := range list {
		switch v.str {
		case "object", "array", "string", "number", "integer", "boolean", "null":
			if v.kind == 's' && !slices.Contains(types, v.str) {
				types = append(types, v.str)
			}
		default:
			return nil, invalid(path+"/type", "unknown type %s", v.text())
		}
	}
	return types, nil
}

func (c *compiler) choice(alts []int32) (int32, error) {
	if len(alts) == 1 {
		return alts[0], nil
	}
	var flat []int32
	for _, a := range alts {
		if c.g.nodes[a].kind == kChoice {
			flat = append(flat, c.g.nodes[a].alts...)
		} else {
			flat = append(flat, a)
		}
	}
	return c.g.add(node{kind: kChoice, alts: flat})
}

func (c *compiler) anyOf(v jv, path string, depth int) (int32, error) {
	if v.kind != 'a' || len(v.arr) == 0 {
		return 0, invalid(path+"/anyOf", "want a non-empty array of schemas")
	}
	alts := make([]int32, len(v.arr))
	for i, s := range v.arr {
		n, err := c.compile(s, fmt.Sprintf("%s/anyOf/%d", path, i), depth)
		if err != nil {
			return 0, err
		}
		alts[i] = n
	}
	return c.choice(alts)
}

func (c *compiler) ref(v jv, path string, depth int) (int32, error) {
	if v.kind != 's' {
		return 0, invalid(path+"/$ref", "want a string")
	}
	ref := v.str
	if n, ok := c.refs[ref]; ok {
		return n, nil
	}
	if c.active[ref] {
		return 0, unsupported(path, "$ref %q is recursive", ref)
	}
	target, err := c.resolve(ref, path)
	if err != nil {
		return 0, err
	}
	c.active[ref] = true
	n, err := c.compile(target, ref, depth)
	delete(c.active, ref)
	if err != nil {
		return 0, err
	}
	c.refs[ref] = n
	return n, nil
}

// resolve follows a JSON pointer into the root schema; only local refs.
func (c *compiler) resolve(ref, path string) (jv, error) {
	if ref != "#" && !strings.HasPrefix(ref, "#/") {
		return jv{}, unsupported(path, "$ref %q: only references inside the schema (#/...) are supported", ref)
	}
	at := c.root
	if ref == "#" {
		return at, nil
	}
	for tok := range strings.SplitSeq(ref[2:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		var ok bool
		switch at.kind {
		case 'o':
			at, ok = at.get(tok)
		case 'a':
			i, err := strconv.Atoi(tok)
			ok = err == nil && i >= 0 && i < len(at.arr)
			if ok {
				at = at.arr[i]
			}
		}
		if !ok {
			return jv{}, invalid(path, "$ref %q points to nothing", ref)
		}
	}
	return at, nil
}

func (c *compiler) enum(kw string, v jv, types []string, path string) (int32, error) {
	values := []jv{v}
	if kw == "enum" {
		if v.kind != 'a' || len(v.arr) == 0 {
			return 0, invalid(path+"/enum", "want a non-empty array")
		}
		values = v.arr
	}
	var texts []string
	for _, x := range values {
		if types == nil || slices.ContainsFunc(types, x.is) {
			texts = append(texts, string(x.encode(nil)))
		}
	}
	if len(texts) == 0 {
		return 0, unsupported(path, "no value of %q has the schema's type", kw)
	}
	return c.literal(texts)
}

func (c *compiler) typed(t string, s jv, path string, depth int) (int32, error) {
	switch t {
	case "object":
		return c.object(s, path, depth)
	case "array":
		return c.array(s, path, depth)
	case "string":
		return c.str(s, path)
	case "number":
		return c.g.add(node{kind: kNumber})
	case "integer":
		return c.g.add(node{kind: kInteger})
	case "boolean":
		return c.literal([]string{"true", "false"})
	default:
		return c.literal([]string{"null"})
	}
}

func (c *compiler) object(s jv, path string, depth int) (int32, error) {
	type named struct {
		name   string
		schema jv
	}
	var props []named
	if p, ok := s.get("properties"); ok {
		if p.kind != 'o' {
			return 0, invalid(path+"/properties", "want an object")
		}
		for _, m := range p.obj {
			props = append(props, named{m.name, m.value})
		}
	}
	var required []string
	if r, ok := s.get("required"); ok {
		if r.kind != 'a' {
			return 0, invalid(path+"/required", "want an array of names")
		}
		for _, x := range r.arr {
			if x.kind != 's' {
				return 0, invalid(path+"/required", "want an array of names")
			}
			if !slices.Contains(required, x.str) {
				required = append(required, x.str)
			}
		}
	}
	extra := jv{kind: 'b', b: true}
	if a, ok := s.get("additionalProperties"); ok {
		if a.kind != 'b' && a.kind != 'o' {
			return 0, invalid(path+"/additionalProperties", "want a boolean or a schema")
		}
		extra = a
	}
	closed := extra.kind == 'b' && !extra.b
	for _, r := range required {
		if !slices.ContainsFunc(props, func(p named) bool { return p.name == r }) {
			if closed {
				return 0, unsupported(path, "required property %q is not in properties and additionalProperties is false", r)
			}
			props = append(props, named{r, extra})
		}
	}
	if len(props) == 0 && !closed {
		elem, err := c.compile(extra, path+"/additionalProperties", depth+1)
		if err != nil {
			return 0, err
		}
		return c.g.add(node{kind: kMap, elem: elem})
	}
	n := node{kind: kObject, props: make([]prop, len(props)), nextReq: make([]int32, len(props)+1)}
	n.keys = c.g.newTrieNode()
	words := (len(props) + 63) / 64
	for i, p := range props {
		v, err := c.compile(p.schema, path+"/properties/"+pointerEscape(p.name), depth+1)
		if err != nil {
			return 0, err
		}
		n.props[i] = prop{value: v, required: slices.Contains(required, p.name)}
		key := encodeString(nil, p.name)
		at := n.keys
		for j := 0; ; j++ {
			t := &c.g.trie[at]
			if t.props == nil {
				t.props = make([]uint64, words)
			}
			t.props[i>>6] |= 1 << (i & 63)
			if j == len(key) {
				break
			}
			next := c.g.edge(at, key[j])
			if next < 0 {
				next = c.g.newTrieNode()
				c.g.trie[at].edges = append(c.g.trie[at].edges, trieEdge{key[j], next})
			}
			at = next
		}
		c.g.trie[at].term, c.g.trie[at].prop = true, int32(i)
	}
	n.nextReq[len(props)] = -1
	for i := len(props) - 1; i >= 0; i-- {
		n.nextReq[i] = n.nextReq[i+1]
		if n.props[i].required {
			n.nextReq[i] = int32(i)
		}
	}
	return c.g.add(n)
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// count reads a non-negative integer keyword; def when absent.
func count(s jv, kw, path string, def int32) (int32, error) {
	v, ok := s.get(kw)
	if !ok {
		return def, nil
	}
	if v.kind == 'n' {
		if f, err := v.num.Float64(); err == nil && f >= 0 && f == math.Trunc(f) {
			if f > 1<<20 {
				return 0, unsupported(path, "%s %s is larger than %d", kw, v.num, 1<<20)
			}
			return int32(f), nil
		}
	}
	return 0, invalid(path+"/"+kw, "want a non-negative integer")
}

func (c *compiler) array(s jv, path string, depth int) (int32, error) {
	lo, err := count(s, "minItems", path, 0)
	if err != nil {
		return 0, err
	}
	hi, err := count(s, "maxItems", path, -1)
	if err != nil {
		return 0, err
	}
	if hi >= 0 && lo > hi {
		return 0, unsupported(path, "minItems %d is above maxItems %d", lo, hi)
	}
	items := jv{kind: 'b', b: true}
	if it, ok := s.get("items"); ok {
		if it.kind == 'a' {
			return 0, unsupported(path+"/items", "items as an array (tuples) is not supported")
		}
		items = it
	}
	var elem int32
	if items.kind == 'b' && !items.b {
		if lo > 0 {
			return 0, unsupported(path, "minItems %d with items false accepts no value", lo)
		}
		hi = 0
		elem = c.anyValue()
	} else if elem, err = c.compile(items, path+"/items", depth+1); err != nil {
		return 0, err
	}
	return c.g.add(node{kind: kArray, elem: elem, minItems: lo, maxItems: hi})
}

func (c *compiler) str(s jv, path string) (int32, error) {
	lo, err := count(s, "minLength", path, 0)
	if err != nil {
		return 0, err
	}
	hi, err := count(s, "maxLength", path, -1)
	if err != nil {
		return 0, err
	}
	if hi >= 0 && lo > hi {
		return 0, unsupported(path, "minLength %d is above maxLength %d", lo, hi)
	}
	n := node{kind: kString, minLen: lo, maxLen: hi}
	if f, ok := s.get("format"); ok {
		if f.kind != 's' {
			return 0, invalid(path+"/format", "want a string")
		}
		d, known := formats()[f.str]
		if !known {
			return 0, unsupported(path, "format %q is not supported (date, time, date-time, uuid and email are)", f.str)
		}
		if lo > 0 || hi >= 0 {
			return 0, unsupported(path, "format %q with minLength or maxLength is not supported", f.str)
		}
		n.format = d
	}
	return c.g.add(n)
}

// jv is a parsed JSON value that keeps the order of object members.
type jv struct {
	kind byte // 'o' object, 'a' array, 's' string, 'n' number, 'b' boolean, 'z' null
	obj  []member
	arr  []jv
	str  string
	num  json.Number
	b    bool
}

type member struct {
	name  string
	value jv
}

func (v jv) get(name string) (jv, bool) {
	for i := len(v.obj) - 1; i >= 0; i-- {
		if v.obj[i].name == name {
			return v.obj[i].value, true
		}
	}
	return jv{}, false
}

// is reports whether the value has JSON Schema type t.
func (v jv) is(t string) bool {
	switch t {
	case "object":
		return v.kind == 'o'
	case "array":
		return v.kind == 'a'
	case "string":
		return v.kind == 's'
	case "number":
		return v.kind == 'n'
	case "integer":
		f, err := v.num.Float64()
		return v.kind == 'n' && err == nil && f == math.Trunc(f)
	case "boolean":
		return v.kind == 'b'
	case "null":
		return v.kind == 'z'
	}
	return false
}

func (v jv) text() string { return string(v.encode(nil)) }

// encode writes v as compact JSON.
func (v jv) encode(b []byte) []byte {
	switch v.kind {
	case 'o':
		b = append(b, '{')
		for i, m := range v.obj {
			if i > 0 {
				b = append(b, ',')
			}
			b = encodeString(b, m.name)
			b = append(b, ':')
			b = m.value.encode(b)
		}
		return append(b, '}')
	case 'a':
		b = append(b, '[')
		for i, x := range v.arr {
			if i > 0 {
				b = append(b, ',')
			}
			b = x.encode(b)
		}
		return append(b, ']')
	case 's':
		return encodeString(b, v.str)
	case 'n':
		return append(b, v.num...)
	case 'b':
		return strconv.AppendBool(b, v.b)
	}
	return append(b, "null"...)
}

func encodeString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

func parseJSON(data []byte) (jv, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	v, err := parseValue(d)
	if err != nil {
		return jv{}, err
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return jv{}, errors.New("data after the schema")
	}
	return v, nil
}

func parseValue(d *json.Decoder) (jv, error) {
	t, err := d.Token()
	if err != nil {
		return jv{}, err
	}
	switch t := t.(type) {
	case json.Delim:
		switch t {
		case '{':
			v := jv{kind: 'o'}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return jv{}, err
				}
				x, err := parseValue(d)
				if err != nil {
					return jv{}, err
				}
				v.obj = append(v.obj, member{k.(string), x})
			}
			_, err := d.Token()
			return v, err
		case '[':
			v := jv{kind: 'a'}
			for d.More() {
				x, err := parseValue(d)
				if err != nil {
					return jv{}, err
				}
				v.arr = append(v.arr, x)
			}
			_, err := d.Token()
			return v, err
		}
	case string:
		return jv{kind: 's', str: t}, nil
	case json.Number:
		return jv{kind: 'n', num: t}, nil
	case bool:
		return jv{kind: 'b', b: t}, nil
	case nil:
		return jv{kind: 'z'}, nil
	}
	return jv{}, fmt.Errorf("unexpected %v", t)
}
