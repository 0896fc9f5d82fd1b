package queen

import (
	"context"
	"net/http"
	"strings"

	"github.com/rbee-dev/rbee/schemas"
)

// llama.cpp's /tokenize and /detokenize. llama.cpp serves one model; rbee
// takes a "model" field and, without one, the one model live workers
// serve.

type tokenizeRequest struct {
	Model        string `json:"model"`
	Content      string `json:"content"`
	AddSpecial   bool   `json:"add_special"`
	ParseSpecial *bool  `json:"parse_special"`
	WithPieces   bool   `json:"with_pieces"`
}

type tokenPiece struct {
	ID    int32  `json:"id"`
	Piece string `json:"piece"`
}

type detokenizeRequest struct {
	Model  string  `json:"model"`
	Tokens []int32 `json:"tokens"`
}

// defaultModel is the model a request without one means: the only one
// live workers serve.
func (q *Queen) defaultModel(ctx context.Context, model string) (string, error) {
	if model != "" {
		return model, nil
	}
	models, err := q.visibleModels(ctx)
	if err != nil {
		return "", err
	}
	var live []string
	for _, m := range models {
		if m.Status == "" {
			live = append(live, m.ID)
		}
	}
	if len(live) != 1 {
		return "", schemas.Errorf(schemas.CodeInvalidRequest, "model is required: live workers serve %d models (%s)", len(live), clip(strings.Join(live, ", ")))
	}
	return live[0], nil
}

func (q *Queen) handleTokenize(w http.ResponseWriter, r *http.Request) {
	var req tokenizeRequest
	err := decodeStrict(w, r, &req)
	if err == nil {
		req.Model, err = q.defaultModel(r.Context(), req.Model)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ir := schemas.InferRequest{Model: req.Model, Prompt: req.Content, Aux: schemas.Aux{Kind: schemas.KindTokenize,
		AddSpecial: req.AddSpecial, ParseSpecial: req.ParseSpecial == nil || *req.ParseSpecial, WithPieces: req.WithPieces}}
	end, err := q.runAux(w, r, &ir)
	if err != nil {
		writeError(w, err)
		return
	}
	if !req.WithPieces {
		writeJSON(w, http.StatusOK, map[string][]int32{"tokens": nonNil(end.Tokens)})
		return
	}
	pieces := make([]tokenPiece, len(end.Tokens))
	for i, id := range end.Tokens {
		pieces[i] = tokenPiece{ID: id}
		if i < len(end.Pieces) {
			pieces[i].Piece = end.Pieces[i]
		}
	}
	writeJSON(w, http.StatusOK, map[string][]tokenPiece{"tokens": pieces})
}

func (q *Queen) handleDetokenize(w http.ResponseWriter, r *http.Request) {
	var req detokenizeRequest
	err := decodeStrict(w, r, &req)
	if err == nil {
		req.Model, err = q.defaultModel(r.Context(), req.Model)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ir := schemas.InferRequest{Model: req.Model, Aux: schemas.Aux{Kind: schemas.KindDetokenize, Tokens: req.Tokens}}
	end, err := q.runAux(w, r, &ir)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"content": end.Content})
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
