package schemas

import (
	"bytes"
	"encoding/json"
)

// Tool choices (ToolUse.ToolChoice).
const (
	ToolChoiceAuto     = "auto"     // the model may call a tool or answer (the default)
	ToolChoiceNone     = "none"     // the tools are shown, never called
	ToolChoiceRequired = "required" // the answer is a call, sampling constrained to one
	ToolChoiceFunction = "function" // the answer is a call of ToolName, constrained
)

// StopReasonToolCalls ends a job whose answer is tool calls (End.ToolCalls).
const StopReasonToolCalls = "tool_calls"

// MaxTools bounds the tools of one job, as OpenAI does.
const MaxTools = 128

// Tool is a function the model may call: OpenAI's tools[].function.
type Tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
}

// ToolCall is one call a model made (or an assistant message made, in a
// conversation): Arguments is a JSON object as text, as OpenAI has it.
type ToolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// ToolUse is a job's tools, rendered through the model's chat template,
// and how the model may use them. Workers that predate it ignore it:
// upgrade workers before queens.
type ToolUse struct {
	Tools             []Tool `json:"tools,omitempty"`
	ToolChoice        string `json:"tool_choice,omitempty"`
	ToolName          string `json:"tool_name,omitempty"`
	ParallelToolCalls *bool  `json:"parallel_tool_calls,omitempty"`
}

// Constrained reports whether sampling must produce a call.
func (u *ToolUse) Constrained() bool {
	return len(u.Tools) > 0 && (u.ToolChoice == ToolChoiceRequired || u.ToolChoice == ToolChoiceFunction)
}

func (u *ToolUse) validate(j *Job) error {
	if len(u.Tools) > MaxTools {
		return Errorf(CodeInvalidRequest, "%d tools, limit %d", len(u.Tools), MaxTools)
	}
	seen := map[string]bool{}
	for i, t := range u.Tools {
		switch {
		case !schemaName.MatchString(t.Name):
			return Errorf(CodeInvalidRequest, "tools[%d].function.name %q: want 1-64 letters, digits, '_' or '-'", i, t.Name)
		case seen[t.Name]:
			return Errorf(CodeInvalidRequest, "tools[%d].function.name %q: two tools of that name", i, t.Name)
		case len(t.Parameters) > MaxSchemaBytes:
			return Errorf(CodeInvalidRequest, "tools[%d].function.parameters is %d bytes, limit %d", i, len(t.Parameters), MaxSchemaBytes)
		case len(t.Parameters) > 0 && (!json.Valid(t.Parameters) || !bytes.HasPrefix(bytes.TrimSpace(t.Parameters), []byte("{"))):
			return Errorf(CodeInvalidRequest, "tools[%d].function.parameters: want a JSON Schema object", i)
		}
		seen[t.Name] = true
	}
	switch u.ToolChoice {
	case "", ToolChoiceAuto, ToolChoiceNone:
	case ToolChoiceRequired, ToolChoiceFunction:
		if len(u.Tools) == 0 {
			return Errorf(CodeInvalidRequest, "tool_choice %s without tools", u.ToolChoice)
		}
		if u.ToolChoice == ToolChoiceFunction && !seen[u.ToolName] {
			return Errorf(CodeInvalidRequest, "tool_choice names function %q, which is not among the tools", u.ToolName)
		}
	default:
		return Errorf(CodeInvalidRequest, "tool_choice %q: want auto, none, required or function", u.ToolChoice)
	}
	if len(u.Tools) > 0 && j.N > 1 {
		return Errorf(CodeInvalidRequest, "tools with n %d: tool calls come with one choice", j.N)
	}
	if len(u.Tools) > 0 && (j.Prompt != "" || len(j.Messages) == 0) {
		return Errorf(CodeInvalidRequest, "tools need messages: they are rendered through the chat template")
	}
	if len(u.Tools) > 0 && j.ResponseFormat != nil && j.ResponseFormat.Type != FormatText && u.Constrained() {
		return Errorf(CodeInvalidRequest, "tool_choice %s and response_format both constrain the answer: ask for one", u.ToolChoice)
	}
	for i, m := range j.Messages {
		if len(m.ToolCalls) > 0 && m.Role != "assistant" {
			return Errorf(CodeInvalidRequest, "messages[%d]: tool_calls on a %s message", i, m.Role)
		}
		for k, c := range m.ToolCalls {
			if c.Name == "" || (c.Arguments != "" && !json.Valid([]byte(c.Arguments))) {
				return Errorf(CodeInvalidRequest, "messages[%d].tool_calls[%d]: want a function name and JSON arguments", i, k)
			}
		}
	}
	return nil
}
