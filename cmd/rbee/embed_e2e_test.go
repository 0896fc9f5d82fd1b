package main

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/rbee-dev/rbee/infer"
)

// TestEmbeddingsAndTokenizeThroughUp sends embeddings, tokenize and
// detokenize requests through rbee up's queen to its worker process: the
// official Go client's embeddings are the engine's own, to the bit, and so
// are Ollama's /api/embed and the base64 encoding; /tokenize gives the
// tokenizer's IDs and /detokenize the text back.
func TestEmbeddingsAndTokenizeThroughUp(t *testing.T) {
	up := startUp(t)
	// Ctrl-C, so that rbee up stops its worker before the test ends.
	t.Cleanup(func() {
		if err := up.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Error(err)
			return
		}
		done := make(chan error, 1)
		go func() { done <- up.cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("rbee up exited with %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("rbee up did not stop within 60s of Ctrl-C")
		}
	})
	base := "http://" + up.httpAddr
	m, err := infer.Load(modelPath, infer.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	em, err := m.NewEmbedder(0)
	if err != nil {
		t.Fatal(err)
	}
	inputs := []string{"Once upon a time", "The little cat sat on the mat."}
	want := make([][]float32, len(inputs))
	tokens := 0
	for i, s := range inputs {
		ids, err := m.Tokenizer().Encode(s, true, false)
		if err != nil {
			t.Fatal(err)
		}
		tokens += len(ids)
		if want[i], err = em.Embed(t.Context(), ids); err != nil {
			t.Fatal(err)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	client := openai.NewClient(option.WithBaseURL(base+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
	res, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "stories260K",
		Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs}})
	if err != nil {
		t.Fatalf("embeddings: %v", err)
	}
	if len(res.Data) != len(inputs) || res.Model != "stories260K" || res.Usage.PromptTokens != int64(tokens) {
		t.Fatalf("response: %d vectors, model %q, usage %+v; want %d vectors of %d tokens", len(res.Data), res.Model, res.Usage, len(inputs), tokens)
	}
	for i, d := range res.Data {
		got := make([]float32, len(d.Embedding))
		for j, v := range d.Embedding {
			got[j] = float32(v)
		}
		if d.Index != int64(i) || !slices.Equal(got, want[i]) {
			t.Errorf("embedding %d (index %d) differs from the engine's", i, d.Index)
		}
	}
	if _, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "stories260K", Dimensions: openai.Int(8),
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("a")}}); err == nil {
		t.Error("dimensions: no error")
	}

	post := func(path string, body any, out any) {
		t.Helper()
		resp := postJSON(t, base+path, body)
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d, %v", path, resp.StatusCode, err)
		}
	}
	var b64 struct {
		Data []struct {
			Embedding string `json:"embedding"`
		} `json:"data"`
	}
	post("/v1/embeddings", map[string]any{"model": "stories260K", "input": inputs[1], "encoding_format": "base64"}, &b64)
	raw, err := base64.StdEncoding.DecodeString(b64.Data[0].Embedding)
	if err != nil || len(raw) != 4*len(want[1]) {
		t.Fatalf("base64: %d bytes, %v", len(raw), err)
	}
	for j := range want[1] {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*j:])); got != want[1][j] {
			t.Fatalf("base64 value %d: %v, want %v", j, got, want[1][j])
		}
	}

	var ollama struct {
		Embeddings      [][]float32 `json:"embeddings"`
		PromptEvalCount int         `json:"prompt_eval_count"`
	}
	post("/api/embed", map[string]any{"model": "stories260K", "input": inputs}, &ollama)
	if !slices.EqualFunc(ollama.Embeddings, want, slices.Equal) || ollama.PromptEvalCount != tokens {
		t.Errorf("/api/embed: %d vectors, %d tokens; want the engine's %d of %d tokens", len(ollama.Embeddings), ollama.PromptEvalCount, len(want), tokens)
	}

	const text = "Once upon a time, there was a cat."
	ids, err := m.Tokenizer().Encode(text, true, true)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		Tokens []int32 `json:"tokens"`
	}
	post("/tokenize", map[string]any{"content": text, "add_special": true}, &tok)
	if !slices.Equal(tok.Tokens, ids) {
		t.Errorf("/tokenize: %v, want %v", tok.Tokens, ids)
	}
	var pieces struct {
		Tokens []struct {
			ID    int32  `json:"id"`
			Piece string `json:"piece"`
		} `json:"tokens"`
	}
	post("/tokenize", map[string]any{"model": "stories260K", "content": text, "with_pieces": true}, &pieces)
	joined := ""
	for i, p := range pieces.Tokens {
		if p.ID != ids[i+1] {
			t.Errorf("piece %d: id %d, want %d", i, p.ID, ids[i+1])
		}
		joined += p.Piece
	}
	if joined != " "+text {
		t.Errorf("pieces join to %q, want %q", joined, " "+text)
	}
	var detok struct {
		Content string `json:"content"`
	}
	post("/detokenize", map[string]any{"tokens": ids[1:]}, &detok)
	if detok.Content != text {
		t.Errorf("/detokenize: %q, want %q", detok.Content, text)
	}
}
