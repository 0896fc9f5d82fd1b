package queen

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	"github.com/rbee-dev/rbee/schemas"
)

// The routes whose jobs do not generate: /v1/embeddings and /api/embed
// (embed jobs), /tokenize and /detokenize (tokenize and detokenize jobs).
// The queen has no model: each is a job on the model's work queue, and the
// answer is the one end event a worker sends.

// embeddingsRequest is OpenAI's embeddings request; every field it defines
// is here, and any other is refused.
type embeddingsRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     *int            `json:"dimensions"`
	User           string          `json:"user"`
}

type embeddingsResponse struct {
	Object string          `json:"object"`
	Data   []embeddingData `json:"data"`
	Model  string          `json:"model"`
	Usage  embeddingsUsage `json:"usage"`
}

type embeddingData struct {
	Object    string `json:"object"`
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string
}

type embeddingsUsage struct {
	PromptTokens int `json:"prompt_tokens"`
	TotalTokens  int `json:"total_tokens"`
}

// textInput reads an embeddings input: a string or an array of strings.
// Token arrays, which OpenAI also takes, are refused: the worker's
// tokenizer is the model's, and IDs from another would mean nothing.
func textInput(raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, schemas.Errorf(schemas.CodeInvalidRequest, "input is missing")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil {
		return []string{one}, nil
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list, nil
	}
	var tokens []json.RawMessage
	if json.Unmarshal(raw, &tokens) == nil {
		return nil, schemas.Errorf(schemas.CodeUnsupportedParameter, "unsupported parameter input as token arrays: send a string or an array of strings")
	}
	return nil, schemas.Errorf(schemas.CodeInvalidRequest, "input: want a string or an array of strings")
}

// checkInputs applies the queen's text checks to each input.
func checkInputs(inputs []string) error {
	for i, s := range inputs {
		if err := checkText(fmt.Sprintf("input[%d]", i), s); err != nil {
			return err
		}
	}
	return nil
}

// decodeStrict reads a JSON object body into v, refusing unknown fields.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := readBody(w, r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return schemas.Errorf(schemas.CodeInvalidRequest, "request body is not valid JSON for this endpoint: %v", err)
	}
	return nil
}

func (q *Queen) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	var req embeddingsRequest
	err := decodeStrict(w, r, &req)
	var inputs []string
	if err == nil {
		inputs, err = textInput(req.Input)
	}
	if err == nil {
		switch {
		case req.EncodingFormat != "" && req.EncodingFormat != "float" && req.EncodingFormat != "base64":
			err = schemas.Errorf(schemas.CodeInvalidRequest, "encoding_format %q: want float or base64", req.EncodingFormat)
		case req.Dimensions != nil:
			err = schemas.Errorf(schemas.CodeUnsupportedParameter, "unsupported parameter dimensions: the model's embeddings have the length of its hidden state")
		}
	}
	if err == nil {
		err = checkInputs(inputs)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	ir := schemas.InferRequest{Model: req.Model, Aux: schemas.Aux{Kind: schemas.KindEmbed, Input: inputs}}
	end, err := q.runAux(w, r, &ir)
	if err != nil {
		writeError(w, err)
		return
	}
	resp := embeddingsResponse{Object: "list", Model: req.Model, Data: make([]embeddingData, len(end.Embeddings)),
		Usage: embeddingsUsage{PromptTokens: end.Usage.PromptTokens, TotalTokens: end.Usage.TotalTokens}}
	for i, v := range end.Embeddings {
		resp.Data[i] = embeddingData{Object: "embedding", Index: i, Embedding: v}
		if req.EncodingFormat == "base64" {
			resp.Data[i].Embedding = base64Floats(v)
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// base64Floats is OpenAI's base64 encoding: the little-endian float32s.
func base64Floats(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return base64.StdEncoding.EncodeToString(b)
}

// runAux queues a job that does not generate, after the checks every
// request goes through, and returns its end event. It sets the job and
// worker headers.
func (q *Queen) runAux(w http.ResponseWriter, r *http.Request, ir *schemas.InferRequest) (schemas.Event, error) {
	ctx := r.Context()
	if err := q.vetRequest(ctx, ir); err != nil {
		q.log.Info("request refused", "model", clip(ir.Model), "kind", ir.Kind, "principal", principal(ctx), "err", err)
		return schemas.Event{}, err
	}
	deadline, err := requestDeadline(r)
	if err != nil {
		return schemas.Event{}, err
	}
	job, err := q.admit(ctx, ir, deadline)
	if err != nil {
		q.log.Info("request refused", "model", clip(ir.Model), "kind", ir.Kind, "principal", ir.Principal, "err", err)
		return schemas.Event{}, err
	}
	rl, err := q.startRelay(ctx, job, r.Header.Get(HeaderIdempotencyKey))
	if err != nil {
		q.logQueueError(job, err)
		return schemas.Event{}, err
	}
	defer rl.close()
	q.log.Info("job queued", "job_id", rl.job.ID, "model", job.Model, "kind", job.Kind, "principal", job.Principal)
	w.Header().Set("X-Rbee-Job-Id", rl.job.ID)
	for {
		ev, err := rl.recv(ctx)
		if err != nil {
			return schemas.Event{}, err
		}
		if ev.Type == schemas.EventEnd {
			setWorker(w, ev)
			return ev, nil
		}
	}
}
