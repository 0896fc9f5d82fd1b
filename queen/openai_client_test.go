package queen

import (
	"errors"
	"net/http"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/rbee-dev/rbee/schemas"
)

// The official OpenAI Go client talks to the queen as it would to OpenAI.

func (f *fixture) openaiClient() openai.Client {
	return openai.NewClient(
		option.WithBaseURL(f.http.URL+"/v1/"),
		option.WithAPIKey("unused"),
		option.WithMaxRetries(0),
	)
}

func TestOpenAIClientChat(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say("Once", " upon", " a", " time"))
	client := f.openaiClient()

	comp, err := client.Chat.Completions.New(f.ctx(), openai.ChatCompletionNewParams{
		Model: model,
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("You tell stories."),
			openai.UserMessage("Tell me one."),
		},
		MaxCompletionTokens: openai.Int(16),
		Temperature:         openai.Float(0),
		Seed:                openai.Int(42),
	})
	if err != nil {
		t.Fatalf("chat completion: %v", err)
	}
	j := recvJob(t, taken)
	if comp.ID != "chatcmpl-"+j.Job.ID || comp.Model != model || len(comp.Choices) != 1 {
		t.Fatalf("completion %+v", comp)
	}
	c := comp.Choices[0]
	if c.Message.Content != "Once upon a time" || c.Message.Role != "assistant" || c.FinishReason != "stop" {
		t.Errorf("choice %+v", c)
	}
	if comp.Usage.PromptTokens != 5 || comp.Usage.CompletionTokens != 4 || comp.Usage.TotalTokens != 9 {
		t.Errorf("usage %+v", comp.Usage)
	}
	if j.Job.MaxTokens != 16 || j.Job.Temperature == nil || *j.Job.Temperature != 0 || j.Job.Seed == nil || *j.Job.Seed != 42 {
		t.Errorf("queued job %+v", j.Job)
	}
}

func TestOpenAIClientChatStream(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, say("Once", " upon", " a", " time"))
	client := f.openaiClient()

	stream := client.Chat.Completions.NewStreaming(f.ctx(), openai.ChatCompletionNewParams{
		Model:         model,
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me one.")},
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	defer stream.Close()
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		if !acc.AddChunk(stream.Current()) {
			t.Fatalf("the accumulator rejected chunk %d: %+v", chunks, stream.Current())
		}
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if chunks != 6 { // four tokens, the finish, the usage
		t.Errorf("%d chunks, want 6", chunks)
	}
	if len(acc.Choices) != 1 {
		t.Fatalf("accumulated %+v", acc.ChatCompletion)
	}
	c := acc.Choices[0]
	if c.Message.Content != "Once upon a time" || c.FinishReason != "stop" {
		t.Errorf("accumulated choice %+v", c)
	}
	if acc.Usage.TotalTokens != 9 {
		t.Errorf("usage %+v", acc.Usage)
	}
}

func TestOpenAIClientErrors(t *testing.T) {
	f := newFixture(t, nil)
	client := f.openaiClient()
	_, err := client.Chat.Completions.New(f.ctx(), openai.ChatCompletionNewParams{
		Model:    "gpt-9",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v is not an *openai.Error", err)
	}
	if apiErr.StatusCode != http.StatusNotFound || apiErr.Code != string(schemas.CodeModelNotFound) {
		t.Errorf("status %d code %q, want 404 model_not_found", apiErr.StatusCode, apiErr.Code)
	}
}

func TestOpenAIClientCompletionAndModels(t *testing.T) {
	f := newFixture(t, nil)
	f.startWorker(model, say(" there", " was"))
	client := f.openaiClient()

	comp, err := client.Completions.New(f.ctx(), openai.CompletionNewParams{
		Model:     model,
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
		MaxTokens: openai.Int(8),
	})
	if err != nil {
		t.Fatalf("completion: %v", err)
	}
	if len(comp.Choices) != 1 || comp.Choices[0].Text != " there was" || comp.Choices[0].FinishReason != "stop" {
		t.Errorf("completion %+v", comp)
	}

	page, err := client.Models.List(f.ctx())
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != model || page.Data[0].OwnedBy != "rbee" {
		t.Errorf("models %+v", page.Data)
	}
}
