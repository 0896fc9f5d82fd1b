package worker_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

// endOf runs job to its one terminal event.
func endOf(t *testing.T, b *bed, job schemas.Job) schemas.Event {
	t.Helper()
	evs := drain(t, b.submit(t, job))
	if len(evs) != 1 {
		t.Fatalf("%d events, want one end or error event: %+v", len(evs), evs)
	}
	return evs[0]
}

// TestEmbedJob: an embed job's end event carries one vector per input, in
// order, equal to the engine's own embedding of the input's tokens.
func TestEmbedJob(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{})
	inputs := []string{"Once upon a time", "The cat sat on the mat."}
	ev := endOf(t, b, schemas.Job{ID: "embed-1", Aux: schemas.Aux{Kind: schemas.KindEmbed, Input: inputs}})
	if ev.Type != schemas.EventEnd || ev.WorkerID != "w1" {
		t.Fatalf("event %+v, want the end event of w1", ev)
	}
	em, err := testModel.NewEmbedder(0)
	if err != nil {
		t.Fatal(err)
	}
	tokens := 0
	if len(ev.Embeddings) != len(inputs) {
		t.Fatalf("%d embeddings, want %d", len(ev.Embeddings), len(inputs))
	}
	for i, in := range inputs {
		ids, err := testModel.Tokenizer().Encode(in, true, false)
		if err != nil {
			t.Fatal(err)
		}
		tokens += len(ids)
		want, err := em.Embed(t.Context(), ids)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ev.Embeddings[i], want) {
			t.Errorf("embedding %d differs from the engine's", i)
		}
	}
	if slices.Equal(ev.Embeddings[0], ev.Embeddings[1]) {
		t.Error("two texts gave one vector")
	}
	if u := ev.Usage; u.PromptTokens != tokens || u.TotalTokens != tokens || u.CompletionTokens != 0 {
		t.Errorf("usage %+v, want %d prompt tokens", u, tokens)
	}
	b.waitQueueEmpty(t)
}

// TestTokenizeJobs: tokenize gives the tokenizer's IDs (and pieces when
// asked), detokenize turns them back into the text.
func TestTokenizeJobs(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{})
	const text = "Once upon a time, a cat."
	want, err := testModel.Tokenizer().Encode(text, true, true)
	if err != nil {
		t.Fatal(err)
	}
	ev := endOf(t, b, schemas.Job{ID: "tok-1", Prompt: text,
		Aux: schemas.Aux{Kind: schemas.KindTokenize, AddSpecial: true, ParseSpecial: true, WithPieces: true}})
	if ev.Type != schemas.EventEnd || !slices.Equal(ev.Tokens, want) || ev.Usage.PromptTokens != len(want) {
		t.Fatalf("tokenize: %+v, want tokens %v", ev, want)
	}
	if len(ev.Pieces) != len(want) || strings.Join(ev.Pieces[1:], "") != " "+text {
		t.Errorf("pieces %q: want one per token, spelling the text after BOS", ev.Pieces)
	}
	if ev := endOf(t, b, schemas.Job{ID: "tok-2", Prompt: text, Aux: schemas.Aux{Kind: schemas.KindTokenize}}); !slices.Equal(ev.Tokens, want[1:]) || ev.Pieces != nil {
		t.Errorf("without add_special: tokens %v, pieces %q; want %v and no pieces", ev.Tokens, ev.Pieces, want[1:])
	}
	ev = endOf(t, b, schemas.Job{ID: "detok-1", Aux: schemas.Aux{Kind: schemas.KindDetokenize, Tokens: want[1:]}})
	if ev.Type != schemas.EventEnd || ev.Content != text {
		t.Errorf("detokenize: %+v, want content %q", ev, text)
	}
	// As in llama.cpp, a BOS in front keeps the space the first word has.
	if ev := endOf(t, b, schemas.Job{ID: "detok-bos", Aux: schemas.Aux{Kind: schemas.KindDetokenize, Tokens: want}}); ev.Content != " "+text {
		t.Errorf("detokenize with BOS: %q, want %q", ev.Content, " "+text)
	}
	ev = endOf(t, b, schemas.Job{ID: "detok-2", Aux: schemas.Aux{Kind: schemas.KindDetokenize, Tokens: []int32{1, 1 << 20}}})
	wantError(t, []schemas.Event{ev}, schemas.CodeInvalidRequest)
	if !strings.Contains(ev.Error.Message, "tokens[1]") {
		t.Errorf("error %q: want it to name tokens[1]", ev.Error.Message)
	}
	b.waitQueueEmpty(t)
}

// TestEmbedJobLimits: an input longer than the context fails, or is cut
// to it with truncate; vectors that could not fit in one message are
// refused before any is computed, and so is a tokenize result too large
// for one.
func TestEmbedJobLimits(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{ContextLength: 16})
	long := strings.Repeat("the cat sat on the mat. ", 10)
	ev := endOf(t, b, schemas.Job{ID: "long-1", Aux: schemas.Aux{Kind: schemas.KindEmbed, Input: []string{long}}})
	wantError(t, []schemas.Event{ev}, schemas.CodeContextExceeded)
	ev = endOf(t, b, schemas.Job{ID: "long-2", Aux: schemas.Aux{Kind: schemas.KindEmbed, Input: []string{long}, Truncate: true}})
	if ev.Type != schemas.EventEnd || len(ev.Embeddings) != 1 || ev.Usage.PromptTokens != 16 {
		t.Errorf("truncated: %+v, want one vector of 16 tokens", ev)
	}
	many := make([]string, schemas.MaxEmbedInputs)
	for i := range many {
		many[i] = "a"
	}
	ev = endOf(t, b, schemas.Job{ID: "many-1", Aux: schemas.Aux{Kind: schemas.KindEmbed, Input: many}})
	wantError(t, []schemas.Event{ev}, schemas.CodeTooLarge)
	if !strings.Contains(ev.Error.Message, "send at most") {
		t.Errorf("error %q: want it to say how many inputs fit", ev.Error.Message)
	}
	// Tokens too: 600 KB of single letters are more IDs than a message holds.
	ev = endOf(t, b, schemas.Job{ID: "tok-big", Prompt: strings.Repeat("a b ", 150_000), Aux: schemas.Aux{Kind: schemas.KindTokenize}})
	wantError(t, []schemas.Event{ev}, schemas.CodeTooLarge)
	b.waitQueueEmpty(t)
}
