package queen

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

// sayWithLogprobs emits two tokens with logprobs, as a worker does when a
// job asks: " Once" (with two alternatives) and half of "é".
func sayWithLogprobs(j *fakeJob) {
	for _, lp := range []*schemas.TokenLogprobs{
		{Logprob: -0.25, Bytes: []byte(" Once"), Top: []schemas.TopLogprob{{TokenID: 100, Bytes: []byte(" Once"), Logprob: -0.25}, {TokenID: 7, Bytes: []byte(" The"), Logprob: -2}}},
		{Logprob: -1.5, Bytes: []byte{0xC3}, Top: []schemas.TopLogprob{{TokenID: 101, Bytes: []byte{0xC3}, Logprob: -1.5}}},
	} {
		id := int32(j.seq + 100)
		text := string(lp.Bytes)
		j.emit(schemas.Event{Type: schemas.EventToken, Text: text, TokenID: &id, Logprobs: lp})
	}
	j.end(schemas.StopReasonLength, schemas.Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5})
}

func TestChatLogprobs(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, sayWithLogprobs)
	resp, v := f.post("/v1/chat/completions", chatWith(`,"logprobs":true,"top_logprobs":2`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %v", resp.StatusCode, v)
	}
	if j := recvJob(t, taken); j.Job.Logprobs == nil || *j.Job.Logprobs != 2 {
		t.Errorf("job logprobs %v, want 2 alternatives", j.Job.Logprobs)
	}
	choice := v["choices"].([]any)[0].(map[string]any)
	jsonEqual(t, choice["logprobs"], map[string]any{
		"content": []any{
			map[string]any{"token": " Once", "logprob": -0.25, "bytes": []any{32, 79, 110, 99, 101}, "top_logprobs": []any{
				map[string]any{"token": " Once", "logprob": -0.25, "bytes": []any{32, 79, 110, 99, 101}},
				map[string]any{"token": " The", "logprob": -2, "bytes": []any{32, 84, 104, 101}},
			}},
			map[string]any{"token": "\ufffd", "logprob": -1.5, "bytes": []any{0xC3}, "top_logprobs": []any{
				map[string]any{"token": "\ufffd", "logprob": -1.5, "bytes": []any{0xC3}},
			}},
		},
		"refusal": []any{},
	})

	// Streamed: each token's chunk carries its own entry.
	events := f.stream(chatWith(`,"logprobs":true,"top_logprobs":2,"stream":true`))
	recvJob(t, taken)
	var got []string
	for _, ev := range events[:len(events)-1] {
		c := decodeObject(t, ev)["choices"].([]any)[0].(map[string]any)
		lp, _ := c["logprobs"].(map[string]any)
		if lp == nil {
			continue
		}
		for _, e := range lp["content"].([]any) {
			got = append(got, e.(map[string]any)["token"].(string))
		}
	}
	if len(got) != 2 || got[0] != " Once" {
		t.Errorf("streamed logprobs of tokens %q, want \" Once\" and one more", got)
	}

	// Not asked for: null, as before.
	_, v = f.post("/v1/chat/completions", chatWith(``))
	recvJob(t, taken)
	if lp := v["choices"].([]any)[0].(map[string]any)["logprobs"]; lp != nil {
		t.Errorf("logprobs %v without asking", lp)
	}
}

func TestCompletionLogprobs(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, sayWithLogprobs)
	_, v := f.post("/v1/completions", completionWith(`,"logprobs":2`))
	recvJob(t, taken)
	choice := v["choices"].([]any)[0].(map[string]any)
	jsonEqual(t, choice["logprobs"], map[string]any{
		"tokens":         []any{" Once", "\ufffd"},
		"token_logprobs": []any{-0.25, -1.5},
		"top_logprobs":   []any{map[string]any{" Once": -0.25, " The": -2}, map[string]any{"\ufffd": -1.5}},
		"text_offset":    []any{0, 5},
	})

	resp := f.open(f.ctx(), f.http.URL+"/v1/completions", completionWith(`,"logprobs":0,"stream":true`))
	defer resp.Body.Close()
	events := readSSE(t, resp.Body)
	recvJob(t, taken)
	var offsets []float64
	for _, ev := range events[:len(events)-1] {
		var c struct {
			Choices []struct {
				Logprobs *struct {
					TextOffset []float64 `json:"text_offset"`
				} `json:"logprobs"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatal(err)
		}
		if len(c.Choices) > 0 && c.Choices[0].Logprobs != nil {
			offsets = append(offsets, c.Choices[0].Logprobs.TextOffset...)
		}
	}
	if len(offsets) != 2 || offsets[0] != 0 || offsets[1] != 5 {
		t.Errorf("streamed text offsets %v, want [0 5]", offsets)
	}
}
