package infer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rbee-dev/rbee/infer/grammar"
	"github.com/rbee-dev/rbee/infer/sample"
)

// propertySchemas bound every string and array, so that each generation
// ends within the context: then every output must be complete.
var propertySchemas = []string{
	`{"type":"object","properties":{"name":{"type":"string","minLength":1,"maxLength":12},"age":{"type":"integer"},
	  "mood":{"enum":["happy","sad","angry"]},"pet":{"type":["boolean","null"]}},"required":["name","age","mood"],"additionalProperties":false}`,
	`{"type":"object","properties":{"tags":{"type":"array","items":{"type":"string","maxLength":6},"minItems":1,"maxItems":3},
	  "score":{"type":"number"}},"required":["tags","score"],"additionalProperties":false}`,
	`{"type":"object","properties":{"when":{"type":"string","format":"date-time"},"id":{"type":"string","format":"uuid"},
	  "day":{"type":"string","format":"date"},"mail":{"type":"string","format":"email"}},"required":["when","id","day","mail"]}`,
	`{"$defs":{"pt":{"type":"object","properties":{"x":{"type":"integer"},"y":{"type":"integer"}},"required":["x","y"],"additionalProperties":false}},
	  "type":"object","properties":{"shape":{"anyOf":[{"$ref":"#/$defs/pt"},{"type":"array","items":{"$ref":"#/$defs/pt"},"maxItems":2},{"const":"none"}]}},
	  "required":["shape"],"additionalProperties":false}`,
	`{"type":"array","items":{"type":"object","properties":{"k":{"type":"string","maxLength":4},"v":{"type":"boolean"}},"required":["k","v"],"additionalProperties":false},"minItems":1,"maxItems":2}`,
}

// TestConstrainedStoriesValidate samples with the real model at
// temperature 1: every one of 50 outputs parses and validates against its
// schema, and the generation ends by itself once the value is complete.
func TestConstrainedStoriesValidate(t *testing.T) {
	m := loadStories(t)
	e, err := m.NewEngine(EngineConfig{MaxSequences: 5, ContextLength: 512})
	if err != nil {
		t.Fatal(err)
	}
	s, stop := startScheduler(e)
	defer stop()
	const perSchema = 10
	type outcome struct {
		schema int
		res    Result
		err    error
	}
	results := make([]outcome, len(propertySchemas)*perSchema)
	var wg sync.WaitGroup
	for i := range results {
		schema := i % len(propertySchemas)
		g, err := grammar.FromJSONSchema([]byte(propertySchemas[schema]))
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			req := Request{Prompt: "Once upon a time", Grammar: g,
				Sampling: sample.Params{Temperature: 1, Seed: uint64(i), HasSeed: true}}
			res, err := s.Generate(context.Background(), req, func(Token) error { return nil })
			results[i] = outcome{schema, res, err}
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("generation %d: %v", i, r.err)
		}
		if r.res.StopReason != StopEOG {
			t.Errorf("generation %d (schema %d) stopped by %s after %d tokens: %q", i, r.schema, r.res.StopReason, len(r.res.GeneratedIDs), r.res.Text)
			continue
		}
		var schema any
		if err := json.Unmarshal([]byte(propertySchemas[r.schema]), &schema); err != nil {
			t.Fatal(err)
		}
		var v any
		if err := json.Unmarshal([]byte(r.res.Text), &v); err != nil {
			t.Errorf("generation %d (schema %d) does not parse: %v: %q", i, r.schema, err, r.res.Text)
			continue
		}
		if err := validate(v, schema, schema.(map[string]any)); err != nil {
			t.Errorf("generation %d (schema %d) does not validate: %v: %q", i, r.schema, err, r.res.Text)
		}
	}
	if testing.Verbose() {
		for _, r := range results[:len(propertySchemas)] {
			t.Logf("%s", r.res.Text)
		}
	}
}

// TestConstrainedAndFreeInOneBatch decodes constrained and unconstrained
// sequences in one batch: the free ones produce exactly what they produce
// alone, and the constrained ones valid JSON.
func TestConstrainedAndFreeInOneBatch(t *testing.T) {
	m := loadStories(t)
	free := func(seed uint64) Request {
		return Request{Prompt: "Lily and Ben", MaxTokens: 40, Sampling: sample.Params{Temperature: 1, Seed: seed, HasSeed: true}}
	}
	alone := generateAll(t, m, EngineConfig{MaxSequences: 1, ContextLength: 512}, []Request{free(1), free(2)})
	reqs := []Request{free(1), free(2)}
	for seed := range uint64(2) {
		reqs = append(reqs, Request{Prompt: "Lily and Ben", Grammar: grammar.JSONObject(), MaxTokens: 60,
			Sampling: sample.Params{Temperature: 0.8, Seed: seed, HasSeed: true}})
	}
	e, err := m.NewEngine(EngineConfig{MaxSequences: 4, ContextLength: 512})
	if err != nil {
		t.Fatal(err)
	}
	out := generateOn(t, e, reqs)
	for i := range 2 {
		if !slices.Equal(out[i], alone[i]) {
			t.Errorf("free request %d: %v in the batch, %v alone", i, out[i], alone[i])
		}
	}
	for i := 2; i < 4; i++ {
		text := m.tok.Decode(out[i])
		if len(out[i]) == 0 || text[0] != '{' && text[0] != ' ' && text[0] != '\n' {
			t.Errorf("constrained request %d: %q does not start an object", i, text)
		}
		if len(out[i]) < 60 && !json.Valid([]byte(text)) {
			t.Errorf("constrained request %d ended before max_tokens with invalid JSON %q", i, text)
		}
	}
}

// TestConstrainedResume continues a constrained generation from its first
// tokens, as a worker taking a job over does: the same output.
func TestConstrainedResume(t *testing.T) {
	m := loadStories(t)
	g, err := grammar.FromJSONSchema([]byte(propertySchemas[0]))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Prompt: "Once upon a time", Grammar: g, Sampling: sample.Params{Temperature: 1, Seed: 5, HasSeed: true}}
	whole := generateAll(t, m, EngineConfig{ContextLength: 512}, []Request{req})[0]
	req.Resume = whole[:len(whole)/2]
	rest := generateAll(t, m, EngineConfig{ContextLength: 512}, []Request{req})[0]
	if !slices.Equal(rest, whole) {
		t.Errorf("resumed: %v, want %v", rest, whole)
	}
	e, err := m.NewEngine(EngineConfig{ContextLength: 512})
	if err != nil {
		t.Fatal(err)
	}
	req.Resume = []int32{m.tok.EOS()}
	if _, err := e.NewSequence(req, func(Token) error { return nil }); !errors.Is(err, grammar.ErrRejected) {
		t.Errorf("resuming from tokens the grammar refuses: got %v, want ErrRejected", err)
	}
}

// validate checks v against the JSON Schema subset the tests use; root
// resolves $ref.
func validate(v, schema any, root map[string]any) error {
	s, ok := schema.(map[string]any)
	if !ok {
		return nil
	}
	if ref, ok := s["$ref"].(string); ok {
		var at any = root
		for _, tok := range regexp.MustCompile(`[^/]+`).FindAllString(ref[1:], -1) {
			at = at.(map[string]any)[tok]
		}
		return validate(v, at, root)
	}
	if alts, ok := s["anyOf"].([]any); ok {
		for _, a := range alts {
			if validate(v, a, root) == nil {
				return nil
			}
		}
		return fmt.Errorf("%v matches no alternative of anyOf", v)
	}
	if c, ok := s["const"]; ok && !jsonEqual(v, c) {
		return fmt.Errorf("%v is not the const %v", v, c)
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(x any) bool { return jsonEqual(v, x) }) {
		return fmt.Errorf("%v is not in the enum %v", v, enum)
	}
	if t, ok := s["type"]; ok {
		types, _ := t.([]any)
		if name, ok := t.(string); ok {
			types = []any{name}
		}
		if !slices.ContainsFunc(types, func(t any) bool { return hasType(v, t.(string)) }) {
			return fmt.Errorf("%v is not of type %v", v, t)
		}
	}
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range s["required"].([]any) {
			if _, ok := v[r.(string)]; !ok {
				return fmt.Errorf("required property %v is missing", r)
			}
		}
		for k, x := range v {
			ps, declared := props[k]
			if !declared {
				if s["additionalProperties"] == false {
					return fmt.Errorf("property %q is not allowed", k)
				}
				continue
			}
			if err := validate(x, ps, root); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
	case []any:
		if lo, ok := s["minItems"].(float64); ok && float64(len(v)) < lo {
			return fmt.Errorf("%d items, minItems %v", len(v), lo)
		}
		if hi, ok := s["maxItems"].(float64); ok && float64(len(v)) > hi {
			return fmt.Errorf("%d items, maxItems %v", len(v), hi)
		}
		for i, x := range v {
			if err := validate(x, s["items"], root); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
	case string:
		n := float64(utf8.RuneCountInString(v))
		if lo, ok := s["minLength"].(float64); ok && n < lo {
			return fmt.Errorf("%q is shorter than %v", v, lo)
		}
		if hi, ok := s["maxLength"].(float64); ok && n > hi {
			return fmt.Errorf("%q is longer than %v", v, hi)
		}
		if f, ok := s["format"].(string); ok {
			if err := checkFormat(f, v); err != nil {
				return err
			}
		}
	}
	return nil
}

var (
	uuidRE  = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	emailRE = regexp.MustCompile(`^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$`)
)

func checkFormat(f, v string) error {
	var err error
	switch f {
	case "date":
		_, err = time.Parse(time.DateOnly, v)
	case "date-time":
		_, err = time.Parse(time.RFC3339Nano, v)
	case "uuid":
		if !uuidRE.MatchString(v) {
			err = errors.New("not a uuid")
		}
	case "email":
		if !emailRE.MatchString(v) {
			err = errors.New("not an e-mail address")
		}
	}
	if err != nil {
		return fmt.Errorf("%q is not a %s: %w", v, f, err)
	}
	return nil
}

func hasType(v any, t string) bool {
	switch v := v.(type) {
	case map[string]any:
		return t == "object"
	case []any:
		return t == "array"
	case string:
		return t == "string"
	case float64:
		return t == "number" || t == "integer" && v == math.Trunc(v)
	case bool:
		return t == "boolean"
	case nil:
		return t == "null"
	}
	return false
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

// benchModel is the 134M synthetic model with the 32000-token vocabulary:
// rbee bench's cached file when there is one, else the test models'.
func benchModel(b *testing.B) *Model {
	if home, err := os.UserHomeDir(); err == nil {
		path := filepath.Join(home, ".cache", "rbee", "bench", "stories110m-Q8_0-seed7.gguf")
		if _, err := os.Stat(path); err == nil {
			m, err := Load(path, Options{Threads: benchThreads})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { m.Close() })
			return m
		}
	}
	return loadStories110m(b)
}

// BenchmarkStories110mConstrained compares decode speed with and without a
// response format on the 134M model (32000 tokens). Each iteration
// generates up to 128 tokens from the same prompt and seed freely, as any
// JSON object and against a schema, interleaved so that the machine's load
// weighs on all alike; it reports each one's decode tokens/s and the
// constrained/free ratios.
func BenchmarkStories110mConstrained(b *testing.B) {
	m := benchModel(b)
	g, err := grammar.FromJSONSchema([]byte(`{"type":"object","properties":{"story":{"type":"string"},"words":{"type":"array","items":{"type":"string"}},"n":{"type":"integer"}},"required":["story","words","n"]}`))
	if err != nil {
		b.Fatal(err)
	}
	s, err := m.NewSession(512)
	if err != nil {
		b.Fatal(err)
	}
	kinds := []struct {
		name string
		g    *grammar.Grammar
	}{{"free", nil}, {"json_object", grammar.JSONObject()}, {"json_schema", g}}
	tokens := make([]int, len(kinds))
	decode := make([]time.Duration, len(kinds))
	run := func(k int) {
		s.Reset()
		res, err := s.Generate(context.Background(), Request{Prompt: "Once upon a time", MaxTokens: 128, Grammar: kinds[k].g,
			Sampling: sample.Params{Temperature: 1, Seed: 1, HasSeed: true}}, func(Token) error { return nil })
		if err != nil {
			b.Fatal(err)
		}
		tokens[k] += max(res.Timings.GeneratedTokens-1, 0)
		decode[k] += res.Timings.DecodeDuration
	}
	for k := range kinds {
		run(k) // pages the weights in and fills the mask caches
		tokens[k], decode[k] = 0, 0
	}
	for b.Loop() {
		for k := range kinds {
			run(k)
		}
	}
	rate := func(k int) float64 { return float64(tokens[k]) / decode[k].Seconds() }
	for k, kind := range kinds {
		b.ReportMetric(rate(k), kind.name+"-tok/s")
		// Shorter outputs decode at earlier, cheaper positions.
		b.ReportMetric(float64(tokens[k])/float64(b.N), kind.name+"-tokens/run")
	}
	b.ReportMetric(rate(1)/rate(0), "json_object/free")
	b.ReportMetric(rate(2)/rate(0), "json_schema/free")
}

// BenchmarkMaskStep is the constraint's own cost per token on the 32000
// token vocabulary, without the forward pass: the mask and advancing the
// automaton, with the masks cached (the usual case: JSON states recur) and
// computed afresh for every state (a new grammar's first request).
func BenchmarkMaskStep(b *testing.B) {
	m := benchModel(b)
	ids, err := m.tok.Encode(`{"story": "Once upon a time, there was a little girl named Lily.", "n": [1, 2.5, true, null]}`, false, false)
	if err != nil {
		b.Fatal(err)
	}
	for _, cold := range []bool{false, true} {
		name := "cached"
		if cold {
			name = "cold"
		}
		b.Run(name, func(b *testing.B) {
			c := grammar.NewChecker(grammar.JSONObject(), m.checker(grammar.JSONObject()).Vocab())
			steps := 0
			for b.Loop() {
				if cold {
					c = grammar.NewChecker(c.Grammar(), c.Vocab())
				}
				mt := c.NewMatcher()
				for _, id := range ids {
					_ = mt.Mask()
					if err := mt.Accept(id); err != nil {
						b.Fatal(err)
					}
					steps++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(steps), "µs/token")
		})
	}
}
