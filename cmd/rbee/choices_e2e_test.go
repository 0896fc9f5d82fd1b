package main

import (
	"context"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestOpenAIGoChoicesAndLogprobs drives a real rbee up with the official
// Go client: n = 3 choices, logprobs on chat (streamed and not) and on
// completions, each in the shape the client decodes.
func TestOpenAIGoChoicesAndLogprobs(t *testing.T) {
	up := startUp(t)
	defer stop(t, up.cmd, syscall.SIGTERM)
	client := openai.NewClient(option.WithBaseURL("http://"+up.httpAddr+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	messages := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Tell me a story.")}

	t.Run("n 3", func(t *testing.T) {
		comp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "stories260K", Messages: messages, N: openai.Int(3), MaxCompletionTokens: openai.Int(16),
			Temperature: openai.Float(1), Seed: openai.Int(7), Logprobs: openai.Bool(true),
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(comp.Choices) != 3 {
			t.Fatalf("%d choices, want 3", len(comp.Choices))
		}
		tokens := 0
		distinct := map[string]bool{}
		for i, c := range comp.Choices {
			if c.Index != int64(i) || c.FinishReason == "" {
				t.Errorf("choice %d: index %d finish %q", i, c.Index, c.FinishReason)
			}
			tokens += len(c.Logprobs.Content)
			distinct[c.Message.Content] = true
		}
		if int64(tokens) != comp.Usage.CompletionTokens {
			t.Errorf("the choices' logprobs list %d tokens, usage says %d", tokens, comp.Usage.CompletionTokens)
		}
		if len(distinct) < 2 {
			t.Errorf("three choices, all %q", comp.Choices[0].Message.Content)
		}
	})

	t.Run("chat logprobs", func(t *testing.T) {
		comp, err := client.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "stories260K", Messages: messages, MaxCompletionTokens: openai.Int(12), Temperature: openai.Float(0),
			Logprobs: openai.Bool(true), TopLogprobs: openai.Int(3),
		})
		if err != nil {
			t.Fatal(err)
		}
		c := comp.Choices[0]
		var text strings.Builder
		for i, lp := range c.Logprobs.Content {
			for _, b := range lp.Bytes {
				text.WriteByte(byte(b))
			}
			if len(lp.TopLogprobs) != 3 || lp.TopLogprobs[0].Token != lp.Token || lp.TopLogprobs[0].Logprob != lp.Logprob ||
				lp.Logprob > 0 || math.IsNaN(lp.Logprob) {
				t.Errorf("token %d %+v: want a greedy token first of 3 alternatives", i, lp)
			}
		}
		if int64(len(c.Logprobs.Content)) != comp.Usage.CompletionTokens || !strings.HasPrefix(text.String(), c.Message.Content) {
			t.Errorf("logprobs of %d tokens spelling %q; usage %d, content %q", len(c.Logprobs.Content), text.String(),
				comp.Usage.CompletionTokens, c.Message.Content)
		}
	})

	t.Run("chat logprobs streamed", func(t *testing.T) {
		stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
			Model: "stories260K", Messages: messages, MaxCompletionTokens: openai.Int(12), Temperature: openai.Float(0),
			Logprobs: openai.Bool(true), TopLogprobs: openai.Int(2),
			StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
		})
		tokens, usage := 0, int64(0)
		for stream.Next() {
			chunk := stream.Current()
			for _, c := range chunk.Choices {
				for _, lp := range c.Logprobs.Content {
					tokens++
					if len(lp.TopLogprobs) != 2 {
						t.Errorf("streamed token %q with %d alternatives, want 2", lp.Token, len(lp.TopLogprobs))
					}
				}
			}
			if chunk.Usage.CompletionTokens > 0 {
				usage = chunk.Usage.CompletionTokens
			}
		}
		if err := stream.Err(); err != nil {
			t.Fatal(err)
		}
		if tokens == 0 || int64(tokens) != usage {
			t.Errorf("streamed logprobs of %d tokens, usage %d", tokens, usage)
		}
	})

	t.Run("completions logprobs", func(t *testing.T) {
		comp, err := client.Completions.New(ctx, openai.CompletionNewParams{
			Model: "stories260K", Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String("Once upon a time")},
			MaxTokens: openai.Int(10), Temperature: openai.Float(0), Logprobs: openai.Int(2),
		})
		if err != nil {
			t.Fatal(err)
		}
		lp := comp.Choices[0].Logprobs
		n := len(lp.Tokens)
		if int64(n) != comp.Usage.CompletionTokens || len(lp.TokenLogprobs) != n || len(lp.TopLogprobs) != n || len(lp.TextOffset) != n {
			t.Fatalf("logprobs %+v for %d tokens", lp, comp.Usage.CompletionTokens)
		}
		if strings.Join(lp.Tokens, "") != comp.Choices[0].Text {
			t.Errorf("tokens %q do not spell %q", lp.Tokens, comp.Choices[0].Text)
		}
		for i, top := range lp.TopLogprobs {
			if len(top) == 0 || len(top) > 2 || top[lp.Tokens[i]] != lp.TokenLogprobs[i] {
				t.Errorf("token %d %q (%v): alternatives %v", i, lp.Tokens[i], lp.TokenLogprobs[i], top)
			}
		}
	})
}
