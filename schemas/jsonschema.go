package schemas

//go:generate go run ./internal/genschemas

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
)

// wireTypes are the messages with a JSON Schema file, and what each says to
// someone publishing it by hand.
var wireTypes = []struct {
	file        string
	value       any
	description string
}{
	{"job.json", Job{}, "A generation job on the work queue <prefix>.v2.jobs.<model>, with the job ID in the Nats-Msg-Id header. Set prompt or messages, not both."},
	{"infer_request.json", InferRequest{}, "A request to the queen's Infer endpoint <prefix>.v2.infer. Set prompt or messages, not both."},
	{"event.json", Event{}, "One event of a job, on its subject <prefix>.v2.stream.<owner>.<job> of the job events stream: token events, then one end or error event. A message holds one or more events, one JSON object a line."},
	{"worker_heartbeat.json", WorkerHeartbeat{}, "A worker's heartbeat on <prefix>.v2.heartbeat.worker.<id>, also kept under its ID in the workers KV bucket."},
	{"worker_progress.json", WorkerProgress{}, "A worker's model load progress on <prefix>.v2.progress.worker.<id>: loading with the bytes read, then ready with the load time, or failed with the error."},
	{"hive_heartbeat.json", HiveHeartbeat{}, "A hive's heartbeat on <prefix>.v2.heartbeat.hive.<id>."},
	{"control.json", Control{}, "A command on <prefix>.v2.control.<kind>.<id>."},
	{"control_reply.json", ControlReply{}, "The answer to a control command."},
	{"spawn_request.json", SpawnRequest{}, "A request to a hive's spawn endpoint <prefix>.v2.control.hive.<id>.spawn."},
	{"spawn_reply.json", SpawnReply{}, "A hive's answer to spawn."},
	{"stop_request.json", StopRequest{}, "A request to a hive's stop endpoint <prefix>.v2.control.hive.<id>.stop."},
	{"stop_reply.json", StopReply{}, "A hive's answer to stop, once the worker's process is gone."},
	{"hive_list_reply.json", HiveListReply{}, "A hive's answer to list (<prefix>.v2.control.hive.<id>.list, any body)."},
	{"drain_request.json", DrainRequest{}, "A request to a hive's drain endpoint <prefix>.v2.control.hive.<id>.drain."},
	{"drain_reply.json", DrainReply{}, "A hive's answer to drain."},
	{"shutdown_request.json", ShutdownRequest{}, "A request to a hive's shutdown endpoint <prefix>.v2.control.hive.<id>.shutdown."},
	{"shutdown_reply.json", ShutdownReply{}, "A hive's answer to shutdown, sent before it stops its workers."},
	{"error_response.json", ErrorResponse{}, "The body of every error answer, HTTP or NATS."},
	{"audit_event.json", AuditEvent{}, "An audit event on <prefix>.v2.events.<type>, kept by the events stream."},
	{"job_status.json", JobStatus{}, "A job's record, made from its events: the answer of GET /v1/jobs/{id} and rbee jobs show --json."},
}

// enumValues lists the values of string types whose values are fixed.
func enumValues() map[reflect.Type][]string {
	codes := make([]string, 0, len(httpStatus))
	for c := range httpStatus {
		codes = append(codes, string(c))
	}
	slices.Sort(codes)
	return map[reflect.Type][]string{
		reflect.TypeFor[Code]():      codes,
		reflect.TypeFor[EventType](): {string(EventToken), string(EventEnd), string(EventError)},
		reflect.TypeFor[JobState]():  {string(JobRunning), string(JobDone), string(JobFailed), string(JobCancelled), string(JobExpired)},
		reflect.TypeFor[LoadPhase](): {string(LoadLoading), string(LoadReady), string(LoadFailed)},
	}
}

// JSONSchemas returns a JSON Schema (draft 2020-12) for each wire message,
// keyed by file name ("job.json"), for people who publish with the nats CLI.
// The schemas are made from the Go types by reflection, following
// encoding/json: a field is required unless it is omitempty, omitzero or a
// pointer; embedded structs are inlined; time.Time is a date-time string;
// nested structs go to $defs. Unknown properties are refused, to catch typos.
// They describe shape only: value limits are checked by the Validate methods.
func JSONSchemas() (map[string][]byte, error) {
	files := make(map[string][]byte, len(wireTypes))
	enums := enumValues()
	for _, w := range wireTypes {
		b, err := generateSchema(reflect.TypeOf(w.value), w.description, enums)
		if err != nil {
			return nil, fmt.Errorf("json schema %s: %w", w.file, err)
		}
		files[w.file] = b
	}
	return files, nil
}

const schemaDialect = "https://json-schema.org/draft/2020-12/schema"

// jsonSchema is the subset of JSON Schema the generator writes; its field
// order is the key order in the files.
type jsonSchema struct {
	Schema               string                 `json:"$schema,omitempty"`
	Ref                  string                 `json:"$ref,omitempty"`
	Title                string                 `json:"title,omitempty"`
	Description          string                 `json:"description,omitempty"`
	Type                 any                    `json:"type,omitempty"`
	Format               string                 `json:"format,omitempty"`
	ContentEncoding      string                 `json:"contentEncoding,omitempty"`
	Enum                 []string               `json:"enum,omitempty"`
	Minimum              *int                   `json:"minimum,omitempty"`
	MinItems             *int                   `json:"minItems,omitempty"`
	MaxItems             *int                   `json:"maxItems,omitempty"`
	Items                *jsonSchema            `json:"items,omitempty"`
	Properties           map[string]*jsonSchema `json:"properties,omitempty"`
	Required             []string               `json:"required,omitempty"`
	AdditionalProperties any                    `json:"additionalProperties,omitempty"`
	AnyOf                []*jsonSchema          `json:"anyOf,omitempty"`
	Defs                 map[string]*jsonSchema `json:"$defs,omitempty"`
}

var (
	timeType          = reflect.TypeFor[time.Time]()
	rawMessageType    = reflect.TypeFor[json.RawMessage]()
	jsonMarshalerType = reflect.TypeFor[json.Marshaler]()
	textMarshalerType = reflect.TypeFor[encoding.TextMarshaler]()
)

// generator turns Go types into schemas, collecting named structs in defs.
type generator struct {
	root  reflect.Type
	enums map[reflect.Type][]string
	defs  map[string]*jsonSchema
	named map[string]reflect.Type
}

// generateSchema writes the schema of the struct type t as indented JSON.
func generateSchema(t reflect.Type, description string, enums map[reflect.Type][]string) ([]byte, error) {
	if t.Kind() != reflect.Struct {
		return nil, fmt.Errorf("%v is not a struct", t)
	}
	g := &generator{root: t, enums: enums, defs: map[string]*jsonSchema{}, named: map[string]reflect.Type{t.Name(): t}}
	root, err := g.object(t)
	if err != nil {
		return nil, err
	}
	root.Schema = schemaDialect
	root.Title = t.Name()
	root.Description = description
	if len(g.defs) > 0 {
		root.Defs = g.defs
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<prefix>" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// schema is the schema of a value of type t. asString is the ",string"
// tag option, which wraps numbers and booleans in a JSON string.
func (g *generator) schema(t reflect.Type, asString bool) (*jsonSchema, error) {
	if t.Kind() == reflect.Pointer {
		return g.schema(t.Elem(), asString)
	}
	switch {
	case t == timeType:
		return &jsonSchema{Type: "string", Format: "date-time"}, nil
	case t == rawMessageType:
		return &jsonSchema{}, nil
	case t.Implements(jsonMarshalerType) || reflect.PointerTo(t).Implements(jsonMarshalerType):
		return nil, fmt.Errorf("%v has its own MarshalJSON: no schema known", t)
	case t.Implements(textMarshalerType) || reflect.PointerTo(t).Implements(textMarshalerType):
		return &jsonSchema{Type: "string"}, nil
	}
	if asString {
		switch t.Kind() {
		case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
			reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			return &jsonSchema{Type: "string"}, nil
		}
	}
	zero := 0
	switch t.Kind() {
	case reflect.Bool:
		return &jsonSchema{Type: "boolean"}, nil
	case reflect.String:
		return &jsonSchema{Type: "string", Enum: g.enums[t]}, nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return &jsonSchema{Type: "integer"}, nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return &jsonSchema{Type: "integer", Minimum: &zero}, nil
	case reflect.Float32, reflect.Float64:
		return &jsonSchema{Type: "number"}, nil
	case reflect.Interface:
		return &jsonSchema{}, nil
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return &jsonSchema{Type: "string", ContentEncoding: "base64"}, nil
		}
		items, err := g.schema(t.Elem(), false)
		if err != nil {
			return nil, err
		}
		return &jsonSchema{Type: "array", Items: items}, nil
	case reflect.Array:
		items, err := g.schema(t.Elem(), false)
		if err != nil {
			return nil, err
		}
		n := t.Len()
		return &jsonSchema{Type: "array", Items: items, MinItems: &n, MaxItems: &n}, nil
	case reflect.Map:
		k := t.Key()
		switch {
		case k.Kind() == reflect.String, k.Implements(textMarshalerType),
			k.Kind() >= reflect.Int && k.Kind() <= reflect.Uintptr:
		default:
			return nil, fmt.Errorf("map key type %v cannot be a JSON object key", k)
		}
		values, err := g.schema(t.Elem(), false)
		if err != nil {
			return nil, err
		}
		return &jsonSchema{Type: "object", AdditionalProperties: values}, nil
	case reflect.Struct:
		if t.Name() == "" {
			return g.object(t)
		}
		return g.ref(t)
	}
	return nil, fmt.Errorf("type %v has no JSON form", t)
}

// ref puts a named struct in $defs, once, and refers to it.
func (g *generator) ref(t reflect.Type) (*jsonSchema, error) {
	if t == g.root {
		return &jsonSchema{Ref: "#"}, nil
	}
	name := t.Name()
	ref := &jsonSchema{Ref: "#/$defs/" + name}
	if prev, ok := g.named[name]; ok {
		if prev != t {
			return nil, fmt.Errorf("two types named %s: %v and %v", name, prev, t)
		}
		return ref, nil // defined, or being defined higher up a recursive type
	}
	g.named[name] = t
	s, err := g.object(t)
	if err != nil {
		return nil, err
	}
	g.defs[name] = s
	return ref, nil
}

// object is the schema of struct type t with its properties.
func (g *generator) object(t reflect.Type) (*jsonSchema, error) {
	fields, err := jsonFields(t)
	if err != nil {
		return nil, err
	}
	s := &jsonSchema{Type: "object", Properties: map[string]*jsonSchema{}, AdditionalProperties: false}
	for _, f := range fields {
		fs, err := g.schema(f.typ, f.asString)
		if err != nil {
			return nil, fmt.Errorf("%v.%s: %w", t, f.goName, err)
		}
		k := f.typ.Kind()
		isPtr := k == reflect.Pointer
		if !f.omit && (isPtr || k == reflect.Slice || k == reflect.Map || k == reflect.Interface) {
			// encoding/json writes nil as null when the field is not omitempty.
			fs = nullable(fs)
		}
		s.Properties[f.name] = fs
		if !f.omit && !isPtr && !f.viaPointer {
			s.Required = append(s.Required, f.name)
		}
	}
	return s, nil
}

// nullable lets s also be null.
func nullable(s *jsonSchema) *jsonSchema {
	if typ, ok := s.Type.(string); ok && s.Enum == nil {
		s.Type = []string{typ, "null"}
		return s
	}
	if s.Type == nil && s.Ref == "" && s.AnyOf == nil {
		return s // already accepts anything
	}
	return &jsonSchema{AnyOf: []*jsonSchema{s, {Type: "null"}}}
}

// jsonField is one property as encoding/json sees a struct.
type jsonField struct {
	name, goName string
	typ          reflect.Type
	omit         bool // omitempty or omitzero: may be absent
	asString     bool
	viaPointer   bool // promoted through an embedded pointer: absent when it is nil
	depth        int
	tagged       bool
}

// jsonFields lists t's properties in order, with embedded structs inlined
// and encoding/json's precedence: the shallowest field wins, and at equal
// depth a tagged one. Where encoding/json would silently drop an ambiguous
// name, this is an error.
func jsonFields(t reflect.Type) ([]jsonField, error) {
	var all []jsonField
	var walk func(t reflect.Type, depth int, viaPointer bool, seen map[reflect.Type]bool)
	walk = func(t reflect.Type, depth int, viaPointer bool, seen map[reflect.Type]bool) {
		if seen[t] {
			return
		}
		seen[t] = true
		defer delete(seen, t)
		for i := range t.NumField() {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			if sf.Anonymous {
				ft, ptr := sf.Type, false
				if ft.Kind() == reflect.Pointer {
					ft, ptr = ft.Elem(), true
				}
				if name == "" && ft.Kind() == reflect.Struct {
					walk(ft, depth+1, viaPointer || ptr, seen)
					continue
				}
			}
			if !sf.IsExported() {
				continue
			}
			f := jsonField{name: name, goName: sf.Name, typ: sf.Type, depth: depth, tagged: name != "", viaPointer: viaPointer}
			if f.name == "" {
				f.name = sf.Name
			}
			for o := range strings.SplitSeq(opts, ",") {
				switch o {
				case "omitempty", "omitzero":
					f.omit = true
				case "string":
					f.asString = true
				}
			}
			all = append(all, f)
		}
	}
	walk(t, 0, false, map[reflect.Type]bool{})

	byName := map[string][]int{}
	for i, f := range all {
		byName[f.name] = append(byName[f.name], i)
	}
	var out []jsonField
	for i, f := range all {
		win, err := dominant(all, byName[f.name])
		if err != nil {
			return nil, fmt.Errorf("%v: %w", t, err)
		}
		if win == i {
			out = append(out, f)
		}
	}
	return out, nil
}

// dominant picks, among the fields at indexes idx that share a name, the one
// encoding/json uses.
func dominant(all []jsonField, idx []int) (int, error) {
	depth := all[idx[0]].depth
	for _, i := range idx {
		depth = min(depth, all[i].depth)
	}
	win, wins, tagged := -1, 0, 0
	for _, i := range idx {
		if all[i].depth != depth {
			continue
		}
		wins++
		if all[i].tagged {
			tagged++
			win = i
		} else if win < 0 {
			win = i
		}
	}
	if wins > 1 && tagged != 1 {
		return -1, fmt.Errorf("property %q is defined %d times at the same depth", all[idx[0]].name, wins)
	}
	return win, nil
}
