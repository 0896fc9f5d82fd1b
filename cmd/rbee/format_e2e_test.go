package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/shared"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/infer/grammar"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/schemas"
)

const personSchema = `{"type":"object","properties":{"name":{"type":"string","minLength":1,"maxLength":10},
"age":{"type":"integer"},"mood":{"enum":["happy","sad"]}},"required":["name","age","mood"],"additionalProperties":false}`

// TestStructuredOutputOverHTTP sends response_format through the real queen
// and a worker process: the greedy answer is exactly what the engine
// generates under the same schema, sampled answers all validate, and a
// schema rbee cannot honour is a 400 naming the keyword.
func TestStructuredOutputOverHTTP(t *testing.T) {
	srv := bustest.RunServer(t)
	_, js := bustest.Connect(t, srv)
	subj, _ := schemas.NewSubjects("")
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	queenCmd := start(t, "queen", "--server", srv.ClientURL(), "--http", httpAddr)
	hiveCmd := start(t, "hive", "--server", srv.ClientURL(), "--id", "fmt", "--serve", "stories260K="+modelPath,
		"--replicas", "1", "--ctx", "512", "--threads", "1", "--cache-dir", t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	poll(t, 60*time.Second, func() error {
		workers, err := liveWorkers(ctx, js, subj)
		if err != nil {
			return err
		}
		if len(workers) != 1 {
			return fmt.Errorf("%d ready workers, want 1", len(workers))
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %d", resp.StatusCode)
		}
		return nil
	})

	format := map[string]any{"type": "json_schema", "json_schema": map[string]any{
		"name": "person", "strict": true, "schema": json.RawMessage(personSchema)}}
	messages := []map[string]string{{"role": "user", "content": "Tell me about a person."}}
	chatContent := func(t *testing.T, body map[string]any) (string, string) {
		t.Helper()
		resp := postJSON(t, base+"/v1/chat/completions", body)
		defer resp.Body.Close()
		var out struct {
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || len(out.Choices) != 1 {
			t.Fatalf("status %d: %v %+v", resp.StatusCode, err, out)
		}
		return out.Choices[0].Message.Content, out.Choices[0].FinishReason
	}

	t.Run("greedy is the engine's", func(t *testing.T) {
		g, err := grammar.FromJSONSchema([]byte(personSchema))
		if err != nil {
			t.Fatal(err)
		}
		want := greedy(t, infer.Request{Messages: []chat.Message{{Role: "user", Content: "Tell me about a person."}},
			MaxTokens: 200, Grammar: g, Sampling: sample.Params{Temperature: 0}})
		got, finish := chatContent(t, map[string]any{"model": "stories260K", "messages": messages,
			"max_tokens": 200, "temperature": 0, "response_format": format})
		if got != want || finish != "stop" {
			t.Errorf("content %q (%s), want the engine's %q", got, finish, want)
		}
	})

	t.Run("sampled answers validate", func(t *testing.T) {
		for seed := range 8 {
			got, finish := chatContent(t, map[string]any{"model": "stories260K", "messages": messages,
				"max_tokens": 300, "temperature": 1, "seed": seed, "response_format": format})
			if err := validPerson(got); err != nil || finish != "stop" {
				t.Errorf("seed %d: %q (%s) does not validate: %v", seed, got, finish, err)
			}
		}
	})

	// Any JSON object is unbounded (the model writes long strings), so the
	// stream is checked against the engine's own output under the grammar.
	t.Run("json_object on completions, streamed", func(t *testing.T) {
		want := greedy(t, infer.Request{Prompt: "Once upon a time", MaxTokens: 60, Grammar: grammar.JSONObject(),
			Sampling: sample.Params{Temperature: 0}})
		resp := postJSON(t, base+"/v1/completions", map[string]any{"model": "stories260K", "prompt": "Once upon a time",
			"max_tokens": 60, "temperature": 0, "stream": true, "response_format": map[string]any{"type": "json_object"}})
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var text strings.Builder
		finish := ""
		for line := range strings.SplitSeq(string(raw), "\n") {
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok || data == "[DONE]" {
				continue
			}
			var chunk struct {
				Choices []struct {
					Text         string  `json:"text"`
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(data), &chunk); err != nil {
				t.Fatalf("chunk %q: %v", data, err)
			}
			for _, c := range chunk.Choices {
				text.WriteString(c.Text)
				if c.FinishReason != nil {
					finish = *c.FinishReason
				}
			}
		}
		if text.String() != want || !strings.HasPrefix(strings.TrimLeft(want, " \n"), "{") || finish == "" {
			t.Errorf("streamed %q (%s), want the engine's %q", text.String(), finish, want)
		}
	})

	// The official Go client, as the issue asks: 50 sampled requests, each
	// answer valid against the schema.
	t.Run("openai-go, 50 sampled", func(t *testing.T) {
		client := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
		format := openai.ChatCompletionNewParamsResponseFormatUnion{OfJSONSchema: &shared.ResponseFormatJSONSchemaParam{
			JSONSchema: shared.ResponseFormatJSONSchemaJSONSchemaParam{Name: "person", Strict: openai.Bool(true),
				Schema: json.RawMessage(personSchema)}}}
		for seed := range 50 {
			comp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
				Model: "stories260K", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me about a person.")},
				MaxCompletionTokens: openai.Int(300), Temperature: openai.Float(1), Seed: openai.Int(int64(seed)),
				ResponseFormat: format,
			})
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if err := validPerson(comp.Choices[0].Message.Content); err != nil || comp.Choices[0].FinishReason != "stop" {
				t.Errorf("seed %d: %q (%s): %v", seed, comp.Choices[0].Message.Content, comp.Choices[0].FinishReason, err)
			}
		}
	})

	t.Run("unsupported schema is a 400", func(t *testing.T) {
		resp := postJSON(t, base+"/v1/chat/completions", map[string]any{"model": "stories260K", "messages": messages,
			"response_format": map[string]any{"type": "json_schema", "json_schema": map[string]any{
				"name": "p", "schema": map[string]any{"type": "string", "pattern": "^a+$"}}}})
		defer resp.Body.Close()
		var out schemas.ErrorResponse
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusBadRequest || out.Error.Code != schemas.CodeUnsupportedSchema || !strings.Contains(out.Error.Message, `"pattern"`) {
			t.Errorf("status %d, error %+v; want 400 unsupported_schema naming \"pattern\"", resp.StatusCode, out.Error)
		}
	})

	stop(t, hiveCmd, syscall.SIGTERM)
	stop(t, queenCmd, syscall.SIGTERM)
}

// validPerson checks text against personSchema.
func validPerson(text string) error {
	var p struct {
		Name *string `json:"name"`
		Age  *int    `json:"age"`
		Mood *string `json:"mood"`
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return err
	}
	switch {
	case p.Name == nil || p.Age == nil || p.Mood == nil:
		return fmt.Errorf("a required property is missing")
	case len([]rune(*p.Name)) < 1 || len([]rune(*p.Name)) > 10:
		return fmt.Errorf("name %q is not 1 to 10 characters", *p.Name)
	case *p.Mood != "happy" && *p.Mood != "sad":
		return fmt.Errorf("mood %q is not in the enum", *p.Mood)
	}
	return nil
}
