package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/rbee-dev/rbee/infer/synth"
)

// toolModel writes a synthetic model that takes tools: random weights, the
// GPT-2 byte-level BPE vocabulary and Qwen2.5's chat template (Hermes-style
// <tool_call> tags), both from the repository's test data.
func toolModel(t *testing.T) string {
	t.Helper()
	tmpl, err := os.ReadFile("../../infer/chat/testdata/qwen2.5-instruct.jinja")
	if err != nil {
		t.Fatal(err)
	}
	v, err := synth.ReadVocab("../../infer/tokenizer/testdata/ggml-vocab-gpt-2.gguf")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := synth.Shape("tiny")
	if err != nil {
		t.Fatal(err)
	}
	spec.Name, spec.ChatTemplate = "toolbee", string(tmpl)
	path := filepath.Join(t.TempDir(), "toolbee.gguf")
	if err := synth.WriteFile(path, spec, synth.Q8_0, v); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenAIGoToolCalls: the official Go client's tool calls against a real
// rbee up serving a model whose template takes tools: tool_choice required
// and a named function give a valid call, whole and as streamed deltas.
func TestOpenAIGoToolCalls(t *testing.T) {
	up := startUp(t, "--catalog", "toolbee="+toolModel(t))
	defer stop(t, up.cmd, syscall.SIGTERM)
	client := openai.NewClient(option.WithBaseURL("http://"+up.httpAddr+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tools := []openai.ChatCompletionToolUnionParam{
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "get_weather", Description: openai.String("The weather in a city"),
			Parameters: shared.FunctionParameters{"type": "object", "additionalProperties": false, "required": []string{"city"},
				"properties": map[string]any{"city": map[string]any{"type": "string", "minLength": 1, "maxLength": 12}}}}),
		openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{Name: "now",
			Parameters: shared.FunctionParameters{"type": "object", "properties": map[string]any{}, "additionalProperties": false}}),
	}
	params := openai.ChatCompletionNewParams{
		Model: "toolbee", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("What is the weather in Paris?")},
		Tools: tools, MaxCompletionTokens: openai.Int(64), Temperature: openai.Float(1), Seed: openai.Int(1),
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfFunctionToolChoice: &openai.ChatCompletionNamedToolChoiceParam{
			Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "get_weather"}}},
	}
	validCity := func(t *testing.T, args string) {
		t.Helper()
		var v struct {
			City *string `json:"city"`
		}
		dec := json.NewDecoder(strings.NewReader(args))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil || v.City == nil || *v.City == "" {
			t.Errorf("arguments %q do not validate: %v", args, err)
		}
	}

	t.Run("named function", func(t *testing.T) {
		// The first request loads the model on demand.
		comp, err := client.Chat.Completions.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		c := comp.Choices[0]
		if c.FinishReason != "tool_calls" || len(c.Message.ToolCalls) != 1 || c.Message.ToolCalls[0].Function.Name != "get_weather" ||
			c.Message.ToolCalls[0].ID == "" {
			t.Fatalf("choice %+v, want one get_weather call", c)
		}
		validCity(t, c.Message.ToolCalls[0].Function.Arguments)
	})

	t.Run("required, streamed deltas", func(t *testing.T) {
		p := params
		p.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
		stream := client.Chat.Completions.NewStreaming(ctx, p)
		var id, name, args, finish string
		for stream.Next() {
			for _, c := range stream.Current().Choices {
				for _, d := range c.Delta.ToolCalls {
					if d.Index != 0 {
						t.Errorf("delta for call %d", d.Index)
					}
					id += d.ID
					name += d.Function.Name
					args += d.Function.Arguments
				}
				if c.Delta.Content != "" {
					t.Errorf("content delta %q in a tool call", c.Delta.Content)
				}
				if c.FinishReason != "" {
					finish = c.FinishReason
				}
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if id == "" || finish != "tool_calls" || (name != "get_weather" && name != "now") {
			t.Fatalf("streamed call id %q name %q finish %q", id, name, finish)
		}
		if name == "get_weather" {
			validCity(t, args)
		} else if args != "{}" {
			t.Errorf("now's arguments %q", args)
		}
	})
}
