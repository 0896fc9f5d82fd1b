package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/rbee-dev/rbee/schemas"
)

// Bounds of the HTTP API beyond schemas' own.
const (
	// maxDepth bounds JSON nesting: the deepest request OpenAI defines
	// (a tool schema) needs far less, and a deep body only costs parsing.
	maxDepth = 32
	// maxStopBytes bounds one stop string.
	maxStopBytes = 256
	// maxTemperature is OpenAI's bound; the bus allows more for people
	// who know what they ask for.
	maxTemperature = 2
)

// fieldRule checks one top-level field of a request. nil accepts any value
// the request type decodes.
type fieldRule func(name string, raw json.RawMessage) error

// Fields OpenAI defines that rbee accepts without acting on them: they
// name the caller or tune OpenAI's own service, and ignoring them changes
// nothing in the answer.
var hintFields = []string{
	"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key",
	"reasoning_effort", "verbosity", "prediction",
}

// requestFields is every field each endpoint accepts, with its rule. A
// field OpenAI defines but rbee cannot honour is accepted only at the value
// that asks for nothing (echo false, tools empty), so that clients
// sending defaults work and a request relying on it is refused, not
// answered as if it were honoured. Fields neither OpenAI nor rbee define are
// refused: a misspelt parameter would otherwise be silently ignored.
var requestFields = func() map[bool]map[string]fieldRule {
	common := map[string]fieldRule{
		"model": nil, "max_tokens": nil, "temperature": nil, "top_p": nil, "seed": nil, "stop": nil,
		"presence_penalty": nil, "frequency_penalty": nil, "n": nil, "stream": nil, "stream_options": nil,
		"response_format": nil, "logit_bias": nil,
		// rbee's extensions, as llama.cpp and vLLM spell them.
		"top_k": nil, "min_p": nil, "repeat_penalty": nil, "timeout": nil,
	}
	for _, f := range hintFields {
		common[f] = nil
	}
	chat, completion := maps.Clone(common), maps.Clone(common)
	for f, rule := range map[string]fieldRule{
		"messages": checkMessages, "max_completion_tokens": nil, "logprobs": nil, "top_logprobs": nil,
		"tools": nil, "tool_choice": nil, "parallel_tool_calls": nil,
		"functions": unset, "audio": unset, "web_search_options": unset,
		"function_call": oneOf("none", "auto"), "modalities": textOnly,
	} {
		chat[f] = rule
	}
	for f, rule := range map[string]fieldRule{"prompt": nil, "logprobs": nil, "top_logprobs": unset,
		"suffix": unset, "echo": unset, "best_of": oneOrUnset} {
		completion[f] = rule
	}
	return map[bool]map[string]fieldRule{true: chat, false: completion}
}()

// unset accepts a value that asks for nothing: null, false, 0, "", [] or {}.
func unset(name string, raw json.RawMessage) error {
	switch string(bytes.TrimSpace(raw)) {
	case "null", "false", "0", `""`, "[]", "{}":
		return nil
	}
	return schemas.Errorf(schemas.CodeUnsupportedParameter, "unsupported parameter %s: rbee cannot honour it (leave it out, or null)", name)
}

func oneOrUnset(name string, raw json.RawMessage) error {
	if string(bytes.TrimSpace(raw)) == "1" {
		return nil
	}
	return unset(name, raw)
}

func oneOf(values ...string) fieldRule {
	return func(name string, raw json.RawMessage) error {
		var s string
		if string(bytes.TrimSpace(raw)) == "null" || (json.Unmarshal(raw, &s) == nil && slices.Contains(values, s)) {
			return nil
		}
		return schemas.Errorf(schemas.CodeInvalidRequest, "%s: only %s are supported", name, strings.Join(values, " or "))
	}
}

func textOnly(name string, raw json.RawMessage) error {
	var m []string
	if string(bytes.TrimSpace(raw)) == "null" || (json.Unmarshal(raw, &m) == nil && !slices.ContainsFunc(m, func(s string) bool { return s != "text" })) {
		return nil
	}
	return schemas.Errorf(schemas.CodeInvalidRequest, `%s: only ["text"] is supported`, name)
}

// messageFields are the fields of a chat message OpenAI defines; those
// about tools and audio only at their empty values.
var messageFields = map[string]fieldRule{
	"role": nil, "content": nil, "name": nil, "refusal": nil, "tool_call_id": nil,
	"tool_calls": nil, "function_call": unset, "audio": unset,
}

func checkMessages(_ string, raw json.RawMessage) error {
	var msgs []map[string]json.RawMessage
	if json.Unmarshal(raw, &msgs) != nil {
		return nil // not an array of objects: decoding says so
	}
	for i, m := range msgs {
		if err := checkFields(fmt.Sprintf("messages[%d].", i), m, messageFields); err != nil {
			return err
		}
	}
	return nil
}

func checkFields(prefix string, fields map[string]json.RawMessage, rules map[string]fieldRule) error {
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	slices.Sort(names) // the same body always gets the same error
	for _, name := range names {
		rule, ok := rules[name]
		switch {
		case !ok:
			return schemas.Errorf(schemas.CodeInvalidRequest, "unknown field %q", prefix+clip(name))
		case rule != nil:
			if err := rule(prefix+name, fields[name]); err != nil {
				return err
			}
		}
	}
	return nil
}

// clip keeps an echoed name short.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// checkEncoding refuses a body that is not UTF-8 or nests too deep, before
// any decoding.
func checkEncoding(data []byte) error {
	if !utf8.Valid(data) {
		return schemas.Errorf(schemas.CodeInvalidRequest, "request body is not valid UTF-8")
	}
	if d := depth(data); d > maxDepth {
		return schemas.Errorf(schemas.CodeInvalidRequest, "request body nests deeper than %d levels", maxDepth)
	}
	return nil
}

// checkBody checks what decoding into the request type would let pass:
// the fields an OpenAI request names.
func checkBody(data []byte, chat bool) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return schemas.Errorf(schemas.CodeInvalidRequest, "request body is not valid JSON for this endpoint: want a JSON object")
	}
	return checkFields("", fields, requestFields[chat])
}

// depth is the deepest nesting of arrays and objects in data, which need
// not be valid JSON.
func depth(data []byte) int {
	d, deepest, inString, escaped := 0, 0, false, false
	for _, c := range data {
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			d++
			deepest = max(deepest, d)
		case c == ']' || c == '}':
			d--
		}
	}
	return deepest
}

// checkText refuses control characters other than tab, newline and
// carriage return: a prompt never needs them, and NUL in particular breaks
// tokenizers and logs.
func checkText(what, s string) error {
	for i, c := range s {
		if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f {
			return schemas.Errorf(schemas.CodeInvalidRequest, "%s holds the control character %U at byte %d", what, c, i)
		}
	}
	return nil
}

// checkLimit checks a max_tokens field the request set.
func checkLimit(name string, v *int) error {
	if v != nil && (*v < 1 || *v > schemas.MaxTokensLimit) {
		return schemas.Errorf(schemas.CodeInvalidRequest, "%s %d: want 1 to %d", name, *v, schemas.MaxTokensLimit)
	}
	return nil
}

func (r *chatRequest) check() error {
	if err := checkLimit("max_completion_tokens", r.MaxCompletionTokens); err != nil {
		return err
	}
	return checkLimit("max_tokens", r.MaxTokens)
}

func (r *completionRequest) check() error { return checkLimit("max_tokens", r.MaxTokens) }

// checkInfer checks what the HTTP API bounds more tightly than the bus:
// temperature, stop strings and the text of prompts. schemas' Validate
// does the rest when the job is admitted.
func checkInfer(ir *schemas.InferRequest) error {
	if t := ir.Temperature; t != nil && (*t < 0 || *t > maxTemperature || *t != *t) {
		return schemas.Errorf(schemas.CodeInvalidRequest, "temperature %v: want 0 to %d", *t, maxTemperature)
	}
	if len(ir.Stop) > schemas.MaxStop {
		return schemas.Errorf(schemas.CodeInvalidRequest, "%d stop strings, limit %d", len(ir.Stop), schemas.MaxStop)
	}
	for i, s := range ir.Stop {
		if len(s) > maxStopBytes {
			return schemas.Errorf(schemas.CodeInvalidRequest, "stop[%d] is %d bytes, limit %d", i, len(s), maxStopBytes)
		}
		if err := checkText(fmt.Sprintf("stop[%d]", i), s); err != nil {
			return err
		}
	}
	if err := checkText("prompt", ir.Prompt); err != nil {
		return err
	}
	for i, m := range ir.Messages {
		if err := checkText(fmt.Sprintf("messages[%d].content", i), m.Content); err != nil {
			return err
		}
	}
	return nil
}

// checkContext refuses a max_tokens no live worker of the model has the
// context for. Without a live worker admission answers instead.
func (q *Queen) checkContext(ctx context.Context, ir *schemas.InferRequest) error {
	if ir.MaxTokens == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	workers, err := q.registry.live(ctx)
	if err != nil {
		return err
	}
	most := 0
	for _, w := range workers {
		if w.Model == ir.Model {
			most = max(most, w.Context)
		}
	}
	if most > 0 && ir.MaxTokens > most {
		return schemas.Errorf(schemas.CodeContextExceeded, "max_tokens %d: the %s model's context holds %d tokens", ir.MaxTokens, ir.Model, most)
	}
	return nil
}
