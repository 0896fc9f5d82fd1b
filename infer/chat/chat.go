// Package chat renders a conversation into prompt text with a model's chat
// template: the Jinja2 source GGUF files carry in tokenizer.chat_template.
//
// Templates render as Hugging Face transformers renders them in
// apply_chat_template: trim_blocks and lstrip_blocks are on, and the
// template sees messages (a list of {role, content}), add_generation_prompt,
// bos_token and eos_token, and the functions raise_exception(message), which
// makes Render fail with a *RaisedError, and strftime_now(format). As in
// Jinja2's sandbox, range() refuses more than MaxRange items.
//
// # Fallback
//
// A model file without a template (base models, and tiny story models such
// as stories260K) gets FallbackTemplate, a plain-text transcript:
//
//	system: You are terse.
//
//	user: Hello!
//
//	assistant:
//
// Each message is "role: content" and a blank line; with
// add_generation_prompt the text ends in "assistant:" with no space, because
// SentencePiece and BPE vocabularies put the space in front of the next
// word, so the model's first token brings its own. ChatML, llama.cpp's
// default, is not used: its markers are single special tokens only in
// models trained with them, and a model without them sees "<|im_start|>" as
// a run of ordinary tokens it has never met in that role, while a
// transcript is text any base model can continue. The fallback emits no BOS
// token: the tokenizer adds one when the model file's add_bos_token says so.
//
// # Limits
//
// Render recovers from panics in the template engine and returns them as
// errors, but it does not bound time or memory: a hostile template can still
// loop for very long, recurse until the stack overflows, or build huge
// strings. Templates come from the model files the operator chose to serve
// and are trusted as much as the weights are.
package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/ardanlabs/jinja"
)

// FallbackTemplate is the template used when the model file has none; see
// the package documentation for why it is a plain transcript.
const FallbackTemplate = `{% for message in messages %}{{ message.role + ': ' + message.content + '\n\n' }}{% endfor %}` +
	`{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}`

// MaxRange is the most items range() may produce, as in Jinja2's sandbox;
// it keeps a stray range(10**12) from exhausting memory.
const MaxRange = 100_000

// Message is one turn of the conversation. Name, ToolCallID and ToolCalls
// are OpenAI's tool fields: an assistant's calls, and the call a tool
// message answers.
type Message struct {
	Role       string
	Content    string
	Name       string
	ToolCallID string
	ToolCalls  []ToolCall
}

// RaisedError is returned, wrapped, by Render when the template calls
// raise_exception; Message is the template's text, usually meant for the
// user ("Conversation roles must alternate user/assistant/...").
type RaisedError struct {
	Message string
}

func (e *RaisedError) Error() string {
	return "template raised an exception: " + e.Message
}

// Template is a compiled chat template. It is safe for concurrent use.
type Template struct {
	tmpl *jinja.Template
	// system is whether the template renders a system message; when it
	// does not (Gemma 2 raises "System role not supported", Mistral v0.1
	// wants alternating turns), Render merges system messages into the
	// first user message, as llama.cpp does.
	system bool
	tools  ToolFormat
}

// Probe messages for what a template supports.
const (
	probeSystem = "rbee-probe-system"
	probeUser   = "rbee-probe-user"
)

// Parse compiles a chat template. An empty or all-whitespace source gives
// FallbackTemplate: rendering it would only produce the whitespace.
func Parse(source string) (t *Template, err error) {
	if strings.TrimSpace(source) == "" {
		source = FallbackTemplate
	}
	defer func() {
		if r := recover(); r != nil {
			t, err = nil, fmt.Errorf("parse chat template: template engine panicked: %v", r)
		}
	}()
	tmpl, err := jinja.Compile(source)
	if err != nil {
		return nil, fmt.Errorf("parse chat template: %w", err)
	}
	t = &Template{tmpl: tmpl, system: true, tools: toolFormat(source)}
	out, err := t.render([]Message{{Role: "system", Content: probeSystem}, {Role: "user", Content: probeUser}}, nil, false, "", "")
	if err != nil || !strings.Contains(out, probeSystem) {
		// Merging helps only a template that renders a lone user turn.
		_, uerr := t.render([]Message{{Role: "user", Content: probeUser}}, nil, false, "", "")
		t.system = uerr != nil
	}
	return t, nil
}

// SupportsSystem reports whether the template renders system messages
// itself; Render merges them into the first user turn otherwise.
func (t *Template) SupportsSystem() bool { return t.system }

// mergeSystem folds the system messages into the first user message (their
// contents, then a blank line, then the user's), or makes them one user
// message when no user message follows.
func mergeSystem(msgs []Message) []Message {
	var sys []string
	out := make([]Message, 0, len(msgs))
	for _, m := range msgs {
		if m.Role == "system" {
			sys = append(sys, m.Content)
			continue
		}
		out = append(out, m)
	}
	if len(sys) == 0 {
		return msgs
	}
	prefix := strings.Join(sys, "\n\n")
	for i := range out {
		if out[i].Role == "user" {
			out[i].Content = prefix + "\n\n" + out[i].Content
			return out
		}
	}
	return append([]Message{{Role: "user", Content: prefix}}, out...)
}

// Render formats msgs (system messages merged into the first user turn
// for a template that does not render them). addGenerationPrompt asks the template to end with the
// opening of an assistant turn, which is what generation continues from.
func (t *Template) Render(msgs []Message, addGenerationPrompt bool, bosToken, eosToken string) (string, error) {
	if !t.system {
		msgs = mergeSystem(msgs)
	}
	return t.render(msgs, nil, addGenerationPrompt, bosToken, eosToken)
}

// RenderTools is Render with tools, OpenAI's tool objects ({"type":
// "function", "function": {name, description, parameters}}), in the
// template's tools variable, as transformers passes them.
func (t *Template) RenderTools(msgs []Message, tools []json.RawMessage, addGenerationPrompt bool, bosToken, eosToken string) (string, error) {
	if !t.system {
		msgs = mergeSystem(msgs)
	}
	return t.render(msgs, tools, addGenerationPrompt, bosToken, eosToken)
}

func (t *Template) render(msgs []Message, tools []json.RawMessage, addGenerationPrompt bool, bosToken, eosToken string) (out string, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = "", fmt.Errorf("render chat template: template engine panicked: %v", r)
		}
	}()
	list := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		if list[i], err = messageValue(m); err != nil {
			return "", fmt.Errorf("render chat template: messages[%d]: %w", i, err)
		}
	}
	toolList := jinja.None()
	if len(tools) > 0 {
		vals := make([]jinja.Value, len(tools))
		for i, raw := range tools {
			if vals[i], err = jsonValue(raw); err != nil {
				return "", fmt.Errorf("render chat template: tools[%d]: %w", i, err)
			}
		}
		toolList = jinja.NewList(vals)
	}
	out, err = t.tmpl.RenderValues(map[string]jinja.Value{
		"messages":              jinja.NewList(list),
		"tools":                 toolList,
		"add_generation_prompt": jinja.NewBool(addGenerationPrompt),
		"bos_token":             jinja.NewString(bosToken),
		"eos_token":             jinja.NewString(eosToken),
		// These shadow the engine's builtins of the same name.
		"raise_exception": jinja.NewCallable("raise_exception", raiseException),
		"range":           jinja.NewCallable("range", boundedRange),
	})
	if err != nil {
		return "", fmt.Errorf("render chat template: %w", err)
	}
	return out, nil
}

// raiseException returns a *RaisedError, so callers can tell a template's
// deliberate refusal (bad conversation) from a broken template.
func raiseException(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) == 0 {
		return jinja.Undefined(), &RaisedError{Message: "raise_exception called without a message"}
	}
	msg := args[0].String()
	if args[0].IsString() {
		msg = args[0].AsString()
	}
	return jinja.Undefined(), &RaisedError{Message: msg}
}

var errRangeArgs = errors.New("range: expected 1 to 3 integer arguments")

// boundedRange is Python's range(stop) / range(start, stop[, step]) over
// integers, refusing more than MaxRange items.
func boundedRange(args []jinja.Value, _ map[string]jinja.Value) (jinja.Value, error) {
	if len(args) < 1 || len(args) > 3 {
		return jinja.Undefined(), errRangeArgs
	}
	n := make([]int64, len(args))
	for i, a := range args {
		switch {
		case a.IsInt():
			n[i] = a.AsInt()
		case a.IsBool():
			// Python treats booleans as 0 and 1.
			if a.AsBool() {
				n[i] = 1
			}
		default:
			return jinja.Undefined(), fmt.Errorf("%w, got %s", errRangeArgs, a.String())
		}
	}
	start, stop, step := int64(0), n[0], int64(1)
	if len(n) > 1 {
		start, stop = n[0], n[1]
	}
	if len(n) > 2 {
		step = n[2]
	}
	if step == 0 {
		return jinja.Undefined(), errors.New("range: step must not be zero")
	}
	count := rangeLen(start, stop, step)
	if count > MaxRange {
		return jinja.Undefined(), fmt.Errorf("%w: range: %d items is more than the limit of %d", jinja.ErrLimit, count, MaxRange)
	}
	items := make([]jinja.Value, count)
	for i := range items {
		items[i] = jinja.NewInt(start + int64(i)*step)
	}
	return jinja.NewList(items), nil
}

// rangeLen is len(range(start, stop, step)) for step != 0, computed in
// uint64 so extreme bounds cannot overflow.
func rangeLen(start, stop, step int64) uint64 {
	if step > 0 {
		if start >= stop {
			return 0
		}
		return (uint64(stop)-uint64(start)-1)/uint64(step) + 1
	}
	if start <= stop {
		return 0
	}
	return (uint64(start)-uint64(stop)-1)/(uint64(-step)) + 1
}
