package queen

import (
	"net/http"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

// sayChoices emits the tokens of three choices interleaved, as a worker's
// batch does, and ends them for different reasons.
func sayChoices(j *fakeJob) {
	for _, t := range []struct {
		index int
		text  string
	}{{0, "A"}, {1, "B"}, {2, "C"}, {1, "b"}, {0, "a"}, {2, "c"}, {2, "!"}} {
		id := int32(j.seq + 100)
		j.emit(schemas.Event{Type: schemas.EventToken, Index: t.index, Text: t.text, TokenID: &id})
	}
	usage := schemas.Usage{PromptTokens: 4, CompletionTokens: 7, TotalTokens: 11}
	j.emit(schemas.Event{Type: schemas.EventEnd, StopReason: "stop", StopReasons: []string{"stop", "length", "stop"}, Usage: &usage})
}

func TestChoices(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, sayChoices)
	resp, v := f.post("/v1/chat/completions", chatWith(`,"n":3`))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %v", resp.StatusCode, v)
	}
	if j := recvJob(t, taken); j.Job.N != 3 {
		t.Errorf("job n %d, want 3", j.Job.N)
	}
	choices := v["choices"].([]any)
	want := []struct{ text, finish string }{{"Aa", "stop"}, {"Bb", "length"}, {"Cc!", "stop"}}
	if len(choices) != len(want) {
		t.Fatalf("choices %v", choices)
	}
	for i, w := range want {
		c := choices[i].(map[string]any)
		msg := c["message"].(map[string]any)
		if c["index"] != float64(i) || msg["content"] != w.text || c["finish_reason"] != w.finish {
			t.Errorf("choice %d = %v, want %q finishing %s", i, c, w.text, w.finish)
		}
	}
	if u := v["usage"].(map[string]any); u["completion_tokens"] != float64(7) || u["prompt_tokens"] != float64(4) {
		t.Errorf("usage %v", u)
	}

	// Streamed: chunks carry their choice's index; each choice gets its
	// role first and its own finish_reason last.
	resp2 := f.open(f.ctx(), f.http.URL+"/v1/completions", completionWith(`,"n":3,"stream":true`))
	defer resp2.Body.Close()
	events := readSSE(t, resp2.Body)
	recvJob(t, taken)
	texts, finishes := make([]string, 3), make([]string, 3)
	for _, ev := range events[:len(events)-1] {
		cs := decodeObject(t, ev)["choices"].([]any)
		for _, c := range cs {
			c := c.(map[string]any)
			i := int(c["index"].(float64))
			texts[i] += c["text"].(string)
			if r, ok := c["finish_reason"].(string); ok {
				finishes[i] = r
			}
		}
	}
	for i, w := range want {
		if texts[i] != w.text || finishes[i] != w.finish {
			t.Errorf("streamed choice %d: %q finishing %q, want %q and %s", i, texts[i], finishes[i], w.text, w.finish)
		}
	}
}
