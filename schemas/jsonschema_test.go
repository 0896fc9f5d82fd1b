package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestJSONSchemaFilesAreCurrent(t *testing.T) {
	want, err := JSONSchemas()
	if err != nil {
		t.Fatal(err)
	}
	const hint = "schemas/jsonschema is stale: run go generate ./schemas"
	onDisk, err := filepath.Glob(filepath.Join("jsonschema", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range onDisk {
		if _, ok := want[filepath.Base(path)]; !ok {
			t.Errorf("%s has no message type: %s", path, hint)
		}
	}
	for name, b := range want {
		got, err := os.ReadFile(filepath.Join("jsonschema", name))
		if err != nil {
			t.Errorf("%v: %s", err, hint)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("jsonschema/%s differs from the Go types: %s", name, hint)
		}
	}
}

func TestJSONSchemasAreDeterministic(t *testing.T) {
	a, err := JSONSchemas()
	if err != nil {
		t.Fatal(err)
	}
	b, err := JSONSchemas()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two runs gave different schemas")
	}
}

// schemaFor returns the parsed schema of the wire type of v.
func schemaFor(t *testing.T, v any) map[string]any {
	t.Helper()
	files, err := JSONSchemas()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range wireTypes {
		if reflect.TypeOf(w.value) == reflect.TypeOf(v) {
			return parseSchema(t, files[w.file])
		}
	}
	t.Fatalf("no schema for %T", v)
	return nil
}

func parseSchema(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var s map[string]any
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	if s["$schema"] != schemaDialect {
		t.Fatalf("$schema = %v", s["$schema"])
	}
	return s
}

// conform checks instance v against schema s (with root for $ref), for
// the keywords the generator writes.
func conform(root, s map[string]any, v any, path string) error {
	if ref, ok := s["$ref"].(string); ok {
		if ref == "#" {
			s = root
		} else {
			defs, _ := root["$defs"].(map[string]any)
			def, ok := defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
			if !ok {
				return fmt.Errorf("%s: dangling $ref %s", path, ref)
			}
			s = def
		}
	}
	if alts, ok := s["anyOf"].([]any); ok {
		for _, alt := range alts {
			if conform(root, alt.(map[string]any), v, path) == nil {
				return nil
			}
		}
		return fmt.Errorf("%s: matches no anyOf alternative", path)
	}
	if typ, ok := s["type"]; ok {
		types := []any{typ}
		if list, ok := typ.([]any); ok {
			types = list
		}
		if !slices.ContainsFunc(types, func(t any) bool { return hasType(v, t.(string)) }) {
			return fmt.Errorf("%s: %v is not of type %v", path, v, typ)
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.Contains(enum, v) {
		return fmt.Errorf("%s: %v is not one of %v", path, v, enum)
	}
	if s["format"] == "date-time" {
		if str, ok := v.(string); ok {
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				return fmt.Errorf("%s: %q is not a date-time", path, str)
			}
		}
	}
	if lo, ok := s["minimum"].(float64); ok {
		if n, ok := v.(float64); ok && n < lo {
			return fmt.Errorf("%s: %v is below %v", path, n, lo)
		}
	}
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range asSlice(s["required"]) {
			if _, ok := v[r.(string)]; !ok {
				return fmt.Errorf("%s: required property %q is missing", path, r)
			}
		}
		for k, val := range v {
			sub, ok := props[k].(map[string]any)
			if !ok {
				switch ap := s["additionalProperties"].(type) {
				case bool:
					if !ap {
						return fmt.Errorf("%s: unknown property %q", path, k)
					}
					continue
				case map[string]any:
					sub = ap
				default:
					continue
				}
			}
			if err := conform(root, sub, val, path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, item := range v {
				if err := conform(root, items, item, fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
		if n, ok := s["minItems"].(float64); ok && float64(len(v)) < n {
			return fmt.Errorf("%s: %d items, want at least %v", path, len(v), n)
		}
		if n, ok := s["maxItems"].(float64); ok && float64(len(v)) > n {
			return fmt.Errorf("%s: %d items, want at most %v", path, len(v), n)
		}
	}
	return nil
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func hasType(v any, typ string) bool {
	switch v := v.(type) {
	case nil:
		return typ == "null"
	case bool:
		return typ == "boolean"
	case string:
		return typ == "string"
	case float64:
		return typ == "number" || typ == "integer" && v == math.Trunc(v)
	case []any:
		return typ == "array"
	case map[string]any:
		return typ == "object"
	}
	return false
}

func conformJSON(t *testing.T, schema map[string]any, data []byte) error {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("instance is not JSON: %v", err)
	}
	return conform(schema, schema, v, "$")
}

// Everything Go writes for a message, zero values included, conforms to
// its schema: required and nullable properties match encoding/json. (The
// zero Event is left out: its empty type is rightly not in the enum.)
func TestGoOutputConformsToSchema(t *testing.T) {
	j, chat, r := validJob(), validChatJob(), validInferRequest()
	tok, end, ev := tokenEvent(), endEvent(), errorEvent()
	wh, hh := validWorkerHeartbeat(), validHiveHeartbeat()
	samples := []any{
		j, chat, Job{}, r, InferRequest{}, tok, end, ev, Event{Type: EventToken},
		wh, WorkerHeartbeat{}, hh, HiveHeartbeat{}, validWorkerProgress(), failedWorkerProgress(), WorkerProgress{Phase: LoadLoading},
		Control{Command: ControlShutdown, Reason: "upgrade"}, Control{},
		ControlReply{OK: true}, ControlReply{Error: Errorf(CodeInternal, "x")},
		ErrorResponse{Error: *Errorf(CodeNoCapacity, "queue full")},
		validAuditEvent(), AuditEvent{},
		SpawnRequest{Model: "tiny", OnDemand: true}, SpawnRequest{}, SpawnReply{HiveID: "h1", WorkerID: "w1", Started: true},
		StopRequest{WorkerID: "w1"}, StopReply{HiveID: "h1", WorkerID: "w1", Exit: "exit status 0"},
		validHiveListReply(), HiveListReply{}, DrainRequest{Resume: true}, DrainReply{Draining: true},
		ShutdownRequest{Reason: "upgrade"}, ShutdownReply{HiveID: "h1", Workers: []string{"w1"}}, ShutdownReply{},
		Summarize("j", "q1", []Event{tok, end}, time.Now()), Summarize("j", "q1", []Event{ev}, time.Now()), JobStatus{State: JobRunning},
	}
	covered := map[reflect.Type]bool{}
	for _, v := range samples {
		covered[reflect.TypeOf(v)] = true
		data, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := conformJSON(t, schemaFor(t, v), data); err != nil {
			t.Errorf("%T %s: %v", v, data, err)
		}
	}
	for _, w := range wireTypes {
		if !covered[reflect.TypeOf(w.value)] {
			t.Errorf("no sample of %T", w.value)
		}
	}
}

func TestSchemaRejectsMalformedMessages(t *testing.T) {
	for _, tc := range []struct {
		v    any
		data string
		want string
	}{
		{Job{}, `{"id":"j","model":"m"}`, `"stream" is missing`},
		{Job{}, `{"id":"j","model":"m","stream":"r","max_token":5}`, `unknown property "max_token"`},
		{Job{}, `{"id":"j","model":"m","stream":"r","max_tokens":"5"}`, "type"},
		{Job{}, `{"id":"j","model":"m","stream":"r","max_tokens":1.5}`, "type"},
		{Job{}, `{"id":"j","model":"m","stream":"r","messages":[{"role":"user"}]}`, `"content" is missing`},
		{Job{}, `{"id":"j","model":"m","stream":"r","temperature":null}`, "type"},
		{Job{}, `{"id":"j","model":"m","stream":"r","created_at":"yesterday"}`, "date-time"},
		{Job{}, `[]`, "type"},
		{InferRequest{}, `{"model":"m","stream":"r"}`, `unknown property "stream"`},
		{Event{}, `{"job_id":"j","seq":0,"delivery":1,"type":"tok"}`, "not one of"},
		{Event{}, `{"job_id":"j","seq":0,"delivery":1,"type":"error","error":{"code":"nope","message":""}}`, "not one of"},
		{Event{}, `{"job_id":"j","seq":0,"delivery":1,"type":"end","usage":{"prompt_tokens":1}}`, `"completion_tokens" is missing`},
		{HiveHeartbeat{}, `{"hive_id":"h","hostname":"x","cpus":1,"memory_bytes":-1,"free_bytes":0,"workers":null,"time":"2025-01-01T00:00:00Z"}`, "below"},
		{WorkerHeartbeat{}, `{"worker_id":"w","model":"m","state":"ready","slots":1,"busy":0,"pid":1,"context_length":1,"time":"noon"}`, "date-time"},
		{ControlReply{}, `{"ok":"yes"}`, "type"},
		{ErrorResponse{}, `{"error":{"code":"internal_error"}}`, `"message" is missing`},
	} {
		err := conformJSON(t, schemaFor(t, tc.v), []byte(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%T %s: %v, want an error about %q", tc.v, tc.data, err, tc.want)
		}
	}
}

// Types that exercise the generator beyond the wire messages.
type (
	genInner struct {
		A int    `json:"a"`
		B string `json:"b,omitempty"`
	}
	GenNamed struct {
		X int `json:"x"`
	}
	GenOptional struct {
		O int `json:"o"`
	}
	genText struct{}
	genEdge struct {
		genInner
		*GenOptional
		Tagged GenNamed         `json:"tagged"`
		Again  GenNamed         `json:"again"`
		P      *GenNamed        `json:"p"`
		Skip   int              `json:"-"`
		Dash   int              `json:"-,"`
		Num    int64            `json:"num,string"`
		Bytes  []byte           `json:"bytes"`
		Arr    [2]float32       `json:"arr"`
		M      map[string]uint8 `json:"m,omitempty"`
		IntKey map[int]string   `json:"int_key,omitempty"`
		Any    any              `json:"any"`
		T      time.Time        `json:"t,omitzero"`
		Raw    json.RawMessage  `json:"raw,omitempty"`
		Text   genText          `json:"text"`
		Self   *genEdge         `json:"self,omitempty"`
		List   []GenNamed       `json:"list,omitempty"`
		NoTag  bool
		hidden int
	}
	genDeep struct {
		Z int
	}
	genDeepTwin struct {
		Z int
	}
	genShallow struct {
		genDeep
		Z string
	}
	genAmbiguous struct {
		genDeep
		genDeepTwin
	}
	genTagged struct {
		V int `json:"V"`
	}
	genUntagged struct {
		V string
	}
	genTaggedWins struct {
		genUntagged
		genTagged
	}
	genMarshaler struct{}
)

func (genText) MarshalText() ([]byte, error)      { return []byte("t"), nil }
func (genMarshaler) MarshalJSON() ([]byte, error) { return []byte("1"), nil }

func generate(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := generateSchema(reflect.TypeOf(v), "", nil)
	if err != nil {
		t.Fatalf("%T: %v", v, err)
	}
	return parseSchema(t, b)
}

func TestGeneratorFollowsEncodingJSON(t *testing.T) {
	s := generate(t, genEdge{})
	props := s["properties"].(map[string]any)
	var names []string
	for k := range props {
		names = append(names, k)
	}
	slices.Sort(names)
	want := []string{"-", "NoTag", "a", "again", "any", "arr", "b", "bytes", "int_key", "list", "m", "num", "o", "p", "raw", "self", "t", "tagged", "text"}
	if !slices.Equal(names, want) {
		t.Errorf("properties %v, want %v", names, want)
	}
	required := fmt.Sprint(s["required"])
	if required != "[a tagged again - num bytes arr any text NoTag]" {
		t.Errorf("required %s", required)
	}
	for path, wantJSON := range map[string]string{
		"num":    `{"type":"string"}`,
		"bytes":  `{"contentEncoding":"base64","type":["string","null"]}`,
		"arr":    `{"items":{"type":"number"},"maxItems":2,"minItems":2,"type":"array"}`,
		"m":      `{"additionalProperties":{"minimum":0,"type":"integer"},"type":"object"}`,
		"p":      `{"anyOf":[{"$ref":"#/$defs/GenNamed"},{"type":"null"}]}`,
		"self":   `{"$ref":"#"}`,
		"t":      `{"format":"date-time","type":"string"}`,
		"any":    `{}`,
		"raw":    `{}`,
		"text":   `{"type":"string"}`,
		"tagged": `{"$ref":"#/$defs/GenNamed"}`,
	} {
		got, _ := json.Marshal(props[path])
		if string(got) != wantJSON {
			t.Errorf("%s: %s, want %s", path, got, wantJSON)
		}
	}
	defs := s["$defs"].(map[string]any)
	if len(defs) != 1 || defs["GenNamed"] == nil {
		t.Errorf("$defs %v, want only GenNamed", defs)
	}

	// A round trip through encoding/json conforms.
	v := genEdge{Self: &genEdge{}, List: []GenNamed{{X: 1}}, IntKey: map[int]string{1: "a"}, GenOptional: &GenOptional{O: 2}}
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := conformJSON(t, s, data); err != nil {
		t.Errorf("%s: %v", data, err)
	}

	if got := generate(t, genShallow{})["properties"]; fmt.Sprint(got) != "map[Z:map[type:string]]" {
		t.Errorf("the shallow field did not win: %v", got)
	}
	if got := generate(t, genTaggedWins{})["properties"]; fmt.Sprint(got) != "map[V:map[type:integer]]" {
		t.Errorf("the tagged field did not win: %v", got)
	}
}

func TestGeneratorRefusesWhatItCannotDescribe(t *testing.T) {
	type GenNamed struct{ Y string } // a second type of the same name
	type clash struct {
		A GenNamed `json:"a"`
		B struct {
			C GenNamedAlias `json:"c"`
		} `json:"b"`
	}
	for _, tc := range []struct {
		v    any
		want string
	}{
		{genAmbiguous{}, "defined 2 times"},
		{struct{ C chan int }{}, "no JSON form"},
		{struct{ F func() }{}, "no JSON form"},
		{struct{ M map[bool]int }{}, "map key"},
		{struct{ J genMarshaler }{}, "MarshalJSON"},
		{clash{}, "two types named GenNamed"},
		{42, "not a struct"},
	} {
		_, err := generateSchema(reflect.TypeOf(tc.v), "", nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%T: %v, want an error about %q", tc.v, err, tc.want)
		}
	}
}

type GenNamedAlias = GenNamed
