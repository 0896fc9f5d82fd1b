package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ardanlabs/jinja"
)

// ToolCall is a function call an assistant message made: OpenAI's
// tool_calls entry. Arguments is the JSON object as text, as OpenAI sends
// it; templates see it parsed, as transformers passes it.
type ToolCall struct {
	ID        string
	Name      string
	Arguments string
}

// ToolFormat is how a template's model writes tool calls.
type ToolFormat int

// The tool-call formats rbee parses, chosen from the template's source.
const (
	ToolsNone    ToolFormat = iota // the template renders no tools
	ToolsHermes                    // <tool_call>{"name":..,"arguments":..}</tool_call> (Hermes, Qwen2.5)
	ToolsLlama3                    // {"name":..,"parameters":..} (Llama 3.1 and later)
	ToolsMistral                   // [TOOL_CALLS][{"name":..,"arguments":..}]
)

func (f ToolFormat) String() string {
	return [...]string{"none", "hermes", "llama3", "mistral"}[f]
}

// toolFormat tells the format from markers a family's template spells out.
func toolFormat(source string) ToolFormat {
	switch {
	case !strings.Contains(source, "tools"):
		return ToolsNone
	case strings.Contains(source, "[TOOL_CALLS]"):
		return ToolsMistral
	case strings.Contains(source, "<tool_call>"):
		return ToolsHermes
	case strings.Contains(source, "<|start_header_id|>") && strings.Contains(source, `"parameters"`):
		return ToolsLlama3
	}
	return ToolsNone
}

// ToolFormat is the format the template's model writes tool calls in;
// ToolsNone when the template takes no tools.
func (t *Template) ToolFormat() ToolFormat { return t.tools }

// jsonValue converts JSON to a template value, keeping objects' key order
// (tojson then writes them as the client sent them).
func jsonValue(data []byte) (jinja.Value, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return jinja.Undefined(), err
	}
	if _, err := dec.Token(); err == nil {
		return jinja.Undefined(), errors.New("more than one JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (jinja.Value, error) {
	tok, err := dec.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			var items []jinja.Value
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			_, err := dec.Token()
			return jinja.NewList(items), err
		}
		d := jinja.NewDict()
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return jinja.Undefined(), err
			}
			v, err := decodeValue(dec)
			if err != nil {
				return jinja.Undefined(), err
			}
			d.AsDict().Set(k.(string), v)
		}
		_, err := dec.Token()
		return d, err
	default:
		return jinja.FromGoValue(tok), nil
	}
}

// messageValue is a message as templates read it: role and content, and
// name, tool_call_id and tool_calls ({id, type, function: {name,
// arguments}}, arguments parsed) when set.
func messageValue(m Message) (jinja.Value, error) {
	d := jinja.NewDict()
	dict := d.AsDict()
	dict.Set("role", jinja.NewString(m.Role))
	dict.Set("content", jinja.NewString(m.Content))
	if m.Name != "" {
		dict.Set("name", jinja.NewString(m.Name))
	}
	if m.ToolCallID != "" {
		dict.Set("tool_call_id", jinja.NewString(m.ToolCallID))
	}
	if len(m.ToolCalls) == 0 {
		return d, nil
	}
	calls := make([]jinja.Value, len(m.ToolCalls))
	for i, c := range m.ToolCalls {
		args := jinja.NewDict()
		if strings.TrimSpace(c.Arguments) != "" {
			var err error
			if args, err = jsonValue([]byte(c.Arguments)); err != nil {
				return jinja.Undefined(), fmt.Errorf("tool call %q: arguments are not JSON: %w", c.Name, err)
			}
		}
		fn := jinja.NewDict()
		fn.AsDict().Set("name", jinja.NewString(c.Name))
		fn.AsDict().Set("arguments", args)
		call := jinja.NewDict()
		call.AsDict().Set("id", jinja.NewString(c.ID))
		call.AsDict().Set("type", jinja.NewString("function"))
		call.AsDict().Set("function", fn)
		calls[i] = call
	}
	dict.Set("tool_calls", jinja.NewList(calls))
	return d, nil
}

// ParseToolCalls reads the tool calls a model wrote in format f: the text
// before them is content. ok is false when text holds no well-formed call,
// and it is then all content. Arguments come back as compact JSON.
func ParseToolCalls(f ToolFormat, text string) (content string, calls []ToolCall, ok bool) {
	switch f {
	case ToolsHermes:
		before, rest, found := strings.Cut(text, "<tool_call>")
		if !found {
			return text, nil, false
		}
		for found {
			var body string
			body, rest, found = strings.Cut(rest, "</tool_call>")
			c, err := parseCall([]byte(body), "arguments")
			if err != nil {
				return text, nil, false
			}
			calls = append(calls, c)
			if !found {
				break
			}
			_, rest, found = strings.Cut(rest, "<tool_call>")
		}
		return strings.TrimSpace(before), calls, true
	case ToolsMistral:
		before, rest, found := strings.Cut(text, "[TOOL_CALLS]")
		if !found {
			return text, nil, false
		}
		var raw []json.RawMessage
		if json.Unmarshal([]byte(strings.TrimSpace(rest)), &raw) != nil || len(raw) == 0 {
			return text, nil, false
		}
		for _, r := range raw {
			c, err := parseCall(r, "arguments")
			if err != nil {
				return text, nil, false
			}
			calls = append(calls, c)
		}
		return strings.TrimSpace(before), calls, true
	case ToolsLlama3:
		body := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(text), "<|python_tag|>"))
		for part := range strings.SplitSeq(body, ";") {
			c, err := parseCall([]byte(part), "parameters")
			if err != nil {
				return text, nil, false
			}
			calls = append(calls, c)
		}
		return "", calls, true
	}
	return text, nil, false
}

// parseCall reads {"name": ..., argsKey: {...}} (argsKey or "arguments").
func parseCall(data []byte, argsKey string) (ToolCall, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimSpace(data), &obj); err != nil {
		return ToolCall{}, err
	}
	var name string
	if err := json.Unmarshal(obj["name"], &name); err != nil || name == "" {
		return ToolCall{}, errors.New("a tool call without a name")
	}
	args, ok := obj[argsKey]
	if !ok {
		args, ok = obj["arguments"]
	}
	if !ok {
		args = json.RawMessage("{}")
	}
	var b bytes.Buffer
	if err := json.Compact(&b, args); err != nil || b.Len() == 0 || b.Bytes()[0] != '{' {
		return ToolCall{}, errors.New("a tool call's arguments are not a JSON object")
	}
	return ToolCall{Name: name, Arguments: b.String()}, nil
}
