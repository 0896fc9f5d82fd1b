package worker

import (
	"encoding/json"
	"fmt"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/schemas"
)

// toolRequest adds a job's tools to its engine request: the tools for the
// chat template and, when the job requires a call, the call's opening as
// a forced prefix and a grammar that admits only a valid call. It returns
// the prefix, which belongs to the answer the worker parses.
func toolRequest(job schemas.Job, format chat.ToolFormat, req *infer.Request) (string, error) {
	if len(job.Tools) == 0 {
		return "", nil
	}
	if format == chat.ToolsNone {
		return "", schemas.Errorf(schemas.CodeInvalidRequest,
			"tools: the model's chat template takes no tools in a format rbee reads (Hermes <tool_call>, Llama 3 JSON, Mistral [TOOL_CALLS])")
	}
	for _, t := range job.Tools {
		fn := map[string]any{"name": t.Name}
		if t.Description != "" {
			fn["description"] = t.Description
		}
		if len(t.Parameters) > 0 {
			fn["parameters"] = t.Parameters
		}
		raw, err := json.Marshal(map[string]any{"type": "function", "function": fn})
		if err != nil {
			return "", schemas.Wrap(schemas.CodeInvalidRequest, fmt.Errorf("tools: %w", err))
		}
		req.Tools = append(req.Tools, raw)
	}
	if !job.Constrained() {
		return "", nil
	}
	prefix, schema, err := callSchema(job, format)
	if err != nil {
		return "", err
	}
	g, err := CompileResponseFormat(&schemas.ResponseFormat{Type: schemas.FormatJSONSchema,
		JSONSchema: &schemas.JSONSchemaFormat{Name: "tool_call", Schema: schema}})
	if err != nil {
		return "", err
	}
	req.Grammar, req.AnswerPrefix = g, prefix
	return prefix, nil
}

// callSchema is the JSON Schema of a valid answer in the template's
// format, and the text that opens it: one call of a tool the choice
// allows, {"name": its name, arguments: its parameters}.
func callSchema(job schemas.Job, format chat.ToolFormat) (string, json.RawMessage, error) {
	argsKey := "arguments"
	if format == chat.ToolsLlama3 {
		argsKey = "parameters"
	}
	var calls []any
	for _, t := range job.Tools {
		if job.ToolChoice == schemas.ToolChoiceFunction && t.Name != job.ToolName {
			continue
		}
		params := t.Parameters
		if len(params) == 0 {
			params = json.RawMessage(`{"type":"object"}`)
		}
		calls = append(calls, map[string]any{
			"type": "object", "additionalProperties": false, "required": []string{"name", argsKey},
			"properties": orderedProps{{"name", map[string]any{"const": t.Name}}, {argsKey, params}},
		})
	}
	var one any = map[string]any{"anyOf": calls}
	if len(calls) == 1 {
		one = calls[0]
	}
	prefix := ""
	switch format {
	case chat.ToolsHermes:
		prefix = "<tool_call>\n"
	case chat.ToolsMistral:
		prefix = "[TOOL_CALLS]"
		arr := map[string]any{"type": "array", "items": one, "minItems": 1}
		if p := job.ParallelToolCalls; p != nil && !*p {
			arr["maxItems"] = 1
		}
		one = arr
	}
	schema, err := json.Marshal(one)
	if err != nil {
		return "", nil, schemas.Wrap(schemas.CodeInvalidRequest, fmt.Errorf("tool call schema: %w", err))
	}
	return prefix, schema, nil
}

// orderedProps marshals as a JSON object in its order: the grammar
// generates properties in the schema's order, so "name" comes first.
type orderedProps []struct {
	key string
	val any
}

func (p orderedProps) MarshalJSON() ([]byte, error) {
	out := []byte{'{'}
	for i, kv := range p {
		if i > 0 {
			out = append(out, ',')
		}
		k, err := json.Marshal(kv.key)
		if err != nil {
			return nil, err
		}
		v, err := json.Marshal(kv.val)
		if err != nil {
			return nil, err
		}
		out = append(append(append(out, k...), ':'), v...)
	}
	return append(out, '}'), nil
}

// toolCalls reads the calls in a job's answer (the forced prefix and the
// generated text), with IDs from the job's; none when the job has no tools,
// chose none, or the answer is not a call.
func toolCalls(job schemas.Job, format chat.ToolFormat, prefix, text string) []schemas.ToolCall {
	if len(job.Tools) == 0 || job.ToolChoice == schemas.ToolChoiceNone {
		return nil
	}
	_, calls, ok := chat.ParseToolCalls(format, prefix+text)
	if !ok {
		return nil
	}
	if p := job.ParallelToolCalls; p != nil && !*p {
		calls = calls[:1]
	}
	out := make([]schemas.ToolCall, len(calls))
	for i, c := range calls {
		out[i] = schemas.ToolCall{ID: fmt.Sprintf("call_%s_%d", job.ID, i), Name: c.Name, Arguments: c.Arguments}
	}
	return out
}
