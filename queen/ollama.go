package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/schemas"
)

// Ollama's API on the queen's port, so that programs written for Ollama
// work against rbee: /api/generate and /api/chat (NDJSON streams unless
// "stream": false), /api/embed, /api/tags, /api/ps, /api/show and /api/version. The
// field names and the options map are Ollama's; a request goes through the
// same checks and work queue as an OpenAI one.

// ollamaOptions is Ollama's "options" object: the sampling and length
// settings it maps to rbee's. Options Ollama has and rbee sets per worker
// (num_ctx, num_thread, num_gpu...) are refused by name.
type ollamaOptions struct {
	Temperature      *float64 `json:"temperature"`
	TopK             *int     `json:"top_k"`
	TopP             *float64 `json:"top_p"`
	MinP             *float64 `json:"min_p"`
	Seed             *int64   `json:"seed"`
	NumPredict       *int     `json:"num_predict"`
	Stop             []string `json:"stop"`
	RepeatPenalty    *float64 `json:"repeat_penalty"`
	PresencePenalty  *float64 `json:"presence_penalty"`
	FrequencyPenalty *float64 `json:"frequency_penalty"`
}

type ollamaCommon struct {
	Model     string          `json:"model"`
	Stream    *bool           `json:"stream"`
	Format    json.RawMessage `json:"format"`
	Options   json.RawMessage `json:"options"`
	KeepAlive json.RawMessage `json:"keep_alive"`
	// Think is Ollama's switch for reasoning models; rbee's models do not
	// reason apart from their answer, so false is the only honoured value.
	Think *bool `json:"think"`
}

type ollamaGenerateRequest struct {
	ollamaCommon
	Prompt string `json:"prompt"`
	System string `json:"system"`
	// Raw sends the prompt to the model as is; rbee's completions always
	// do, so a generate request without a system prompt is raw.
	Raw      bool            `json:"raw"`
	Suffix   string          `json:"suffix"`
	Images   json.RawMessage `json:"images"`
	Template string          `json:"template"`
	Context  json.RawMessage `json:"context"`
}

type ollamaMessage struct {
	Role    string          `json:"role"`
	Content string          `json:"content"`
	Images  json.RawMessage `json:"images,omitempty"`
}

type ollamaChatRequest struct {
	ollamaCommon
	Messages []ollamaMessage `json:"messages"`
	Tools    json.RawMessage `json:"tools"`
}

// unsupportedOllamaOptions lists the options rbee cannot honour: a client
// that sets one is told so by name rather than ignored.
var unsupportedOllamaOptions = []string{"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "num_keep",
	"repeat_last_n", "typical_p", "tfs_z", "mirostat", "mirostat_tau", "mirostat_eta", "penalize_newline", "numa", "low_vram",
	"use_mmap", "use_mlock", "vocab_only"}

func ollamaUnsupported(field string) error {
	return schemas.Errorf(schemas.CodeUnsupportedParameter, "unsupported parameter %s: rbee cannot honour it", field)
}

// inferRequest maps the fields the two generation routes share.
func (c *ollamaCommon) inferRequest() (schemas.InferRequest, error) {
	ir := schemas.InferRequest{Model: c.Model}
	if c.Think != nil && *c.Think {
		return ir, ollamaUnsupported("think")
	}
	if len(c.Options) > 0 && !bytes.Equal(c.Options, []byte("null")) {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(c.Options, &raw); err != nil {
			return ir, schemas.Errorf(schemas.CodeInvalidRequest, "options: want an object: %v", err)
		}
		for _, name := range unsupportedOllamaOptions {
			if _, ok := raw[name]; ok {
				return ir, ollamaUnsupported("options." + name)
			}
		}
		var o ollamaOptions
		dec := json.NewDecoder(bytes.NewReader(c.Options))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			return ir, schemas.Errorf(schemas.CodeInvalidRequest, "options: %v", err)
		}
		s := &ir.Sampling
		s.Temperature, s.Seed = o.Temperature, o.Seed
		if o.TopK != nil {
			s.TopK = *o.TopK
		}
		for _, f := range []struct {
			dst *float64
			src *float64
		}{
			{&s.TopP, o.TopP}, {&s.MinP, o.MinP}, {&s.PresencePenalty, o.PresencePenalty},
			{&s.FrequencyPenalty, o.FrequencyPenalty}, {&s.RepeatPenalty, o.RepeatPenalty},
		} {
			if f.src != nil {
				*f.dst = *f.src
			}
		}
		// Ollama's -1 means "until the model stops", as rbee's 0 does.
		if o.NumPredict != nil && *o.NumPredict > 0 {
			ir.MaxTokens = *o.NumPredict
		}
		ir.Stop = o.Stop
	}
	format, err := ollamaFormat(c.Format)
	if err != nil {
		return ir, err
	}
	ir.ResponseFormat = format
	return ir, nil
}

// ollamaFormat maps Ollama's format: "json", or a JSON Schema object, to a
// response format for the constrained sampler.
func ollamaFormat(raw json.RawMessage) (*schemas.ResponseFormat, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0, bytes.Equal(raw, []byte("null")), bytes.Equal(raw, []byte(`""`)):
		return nil, nil
	case bytes.Equal(raw, []byte(`"json"`)):
		return &schemas.ResponseFormat{Type: schemas.FormatJSONObject}, nil
	case raw[0] == '{':
		strict := true
		return &schemas.ResponseFormat{Type: schemas.FormatJSONSchema,
			JSONSchema: &schemas.JSONSchemaFormat{Name: "format", Schema: raw, Strict: &strict}}, nil
	}
	return nil, schemas.Errorf(schemas.CodeInvalidRequest, `format: want "json" or a JSON Schema object`)
}

func (r *ollamaGenerateRequest) inferRequest() (schemas.InferRequest, error) {
	ir, err := r.ollamaCommon.inferRequest()
	if err != nil {
		return ir, err
	}
	switch {
	case r.Suffix != "":
		return ir, ollamaUnsupported("suffix")
	case len(r.Images) > 0 && !bytes.Equal(r.Images, []byte("null")):
		return ir, ollamaUnsupported("images")
	case r.Template != "":
		return ir, ollamaUnsupported("template")
	case len(r.Context) > 0 && !bytes.Equal(r.Context, []byte("null")):
		return ir, ollamaUnsupported("context")
	case r.Prompt == "":
		return ir, schemas.Errorf(schemas.CodeInvalidRequest, "prompt is empty")
	}
	if r.System == "" || r.Raw {
		ir.Prompt = r.Prompt
		return ir, nil
	}
	// With a system prompt Ollama renders both through the chat template.
	ir.Messages = []schemas.Message{{Role: "system", Content: r.System}, {Role: "user", Content: r.Prompt}}
	return ir, nil
}

func (r *ollamaChatRequest) inferRequest() (schemas.InferRequest, error) {
	ir, err := r.ollamaCommon.inferRequest()
	if err != nil {
		return ir, err
	}
	if len(r.Tools) > 0 && !bytes.Equal(r.Tools, []byte("null")) && !bytes.Equal(r.Tools, []byte("[]")) {
		return ir, ollamaUnsupported("tools")
	}
	if len(r.Messages) == 0 {
		return ir, schemas.Errorf(schemas.CodeInvalidRequest, "messages is empty")
	}
	ir.Messages = make([]schemas.Message, len(r.Messages))
	for i, m := range r.Messages {
		if len(m.Images) > 0 && !bytes.Equal(m.Images, []byte("null")) {
			return ir, ollamaUnsupported("messages[].images")
		}
		ir.Messages[i] = schemas.Message{Role: m.Role, Content: m.Content}
	}
	return ir, nil
}

// ollamaChunk is one line of a generate or chat answer.
type ollamaChunk struct {
	Model     string         `json:"model"`
	CreatedAt time.Time      `json:"created_at"`
	Response  *string        `json:"response,omitempty"` // generate
	Message   *ollamaMessage `json:"message,omitempty"`  // chat
	Done      bool           `json:"done"`
	// The last line's:
	DoneReason         string `json:"done_reason,omitempty"`
	TotalDuration      int64  `json:"total_duration,omitempty"`
	LoadDuration       int64  `json:"load_duration,omitempty"`
	PromptEvalCount    int    `json:"prompt_eval_count,omitempty"`
	PromptEvalDuration int64  `json:"prompt_eval_duration,omitempty"`
	EvalCount          int    `json:"eval_count,omitempty"`
	EvalDuration       int64  `json:"eval_duration,omitempty"`
}

func newOllamaChunk(model string, chat bool, text string) ollamaChunk {
	c := ollamaChunk{Model: model, CreatedAt: time.Now().UTC()}
	if chat {
		c.Message = &ollamaMessage{Role: "assistant", Content: text}
	} else {
		c.Response = &text
	}
	return c
}

// finish fills in the last line from the job's end event; durations are
// nanoseconds, as Ollama's.
func (c *ollamaChunk) finish(ev schemas.Event) {
	c.Done, c.DoneReason = true, ev.StopReason
	if c.DoneReason == "" {
		c.DoneReason = "stop"
	}
	if ev.Usage != nil {
		c.PromptEvalCount, c.EvalCount = ev.Usage.PromptTokens, ev.Usage.CompletionTokens
	}
	if t := ev.Timings; t != nil {
		ms := func(v float64) int64 { return int64(v * 1e6) }
		c.TotalDuration = ms(t.TotalMillis)
		c.PromptEvalDuration = ms(t.TimeToFirstMillis)
		c.EvalDuration = max(c.TotalDuration-c.PromptEvalDuration-ms(t.QueueMillis), 0)
	}
}

// ollamaError is Ollama's error body.
type ollamaError struct {
	Error string `json:"error"`
	// Code is rbee's stable code, which Ollama's clients ignore.
	Code schemas.Code `json:"code,omitempty"`
}

func writeOllamaError(w http.ResponseWriter, err error) {
	se := wireError(err)
	writeJSON(w, se.Code.HTTPStatus(), ollamaError{Error: se.Message, Code: se.Code})
}

// decodeOllama reads an Ollama request body. Unknown fields are refused,
// as on the OpenAI routes, so that nothing a client asks for is ignored.
func decodeOllama(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := readBody(w, r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return schemas.Errorf(schemas.CodeInvalidRequest, "decode request: %v", err)
	}
	return nil
}

func (q *Queen) handleOllamaGenerate(w http.ResponseWriter, r *http.Request) {
	var req ollamaGenerateRequest
	q.handleOllama(w, r, &req, &req.ollamaCommon, false)
}

func (q *Queen) handleOllamaChat(w http.ResponseWriter, r *http.Request) {
	var req ollamaChatRequest
	q.handleOllama(w, r, &req, &req.ollamaCommon, true)
}

func (q *Queen) handleOllama(w http.ResponseWriter, r *http.Request, req interface {
	inferRequest() (schemas.InferRequest, error)
}, common *ollamaCommon, chat bool) {
	if err := decodeOllama(w, r, req); err != nil {
		writeOllamaError(w, err)
		return
	}
	ir, err := req.inferRequest()
	if err == nil {
		err = q.vetRequest(r.Context(), &ir)
	}
	if err != nil {
		q.log.Info("request refused", "model", clip(ir.Model), "principal", principal(r.Context()), "request_id", requestID(r.Context()), "err", err)
		writeOllamaError(w, err)
		return
	}
	ctx := r.Context()
	deadline, err := requestDeadline(r)
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		writeOllamaError(w, err)
		return
	}
	job, err := q.admit(ctx, &ir, deadline)
	if err != nil {
		writeOllamaError(w, err)
		return
	}
	rl, err := q.startRelay(ctx, job, r.Header.Get(HeaderIdempotencyKey))
	if err != nil {
		q.logQueueError(job, err)
		writeOllamaError(w, err)
		return
	}
	defer rl.close()
	q.log.Info("job queued", "job_id", rl.job.ID, "model", job.Model, "principal", job.Principal, "api", "ollama",
		"request_id", requestID(ctx))
	w.Header().Set("X-Rbee-Job-Id", rl.job.ID)
	// Ollama streams unless told not to.
	if common.Stream == nil || *common.Stream {
		q.ollamaStream(ctx, w, rl, job.Model, chat)
		return
	}
	var text strings.Builder
	for {
		ev, err := rl.recv(ctx)
		if err != nil {
			writeOllamaError(w, err)
			return
		}
		if ev.Type == schemas.EventEnd {
			setWorker(w, ev)
			c := newOllamaChunk(job.Model, chat, text.String())
			c.finish(ev)
			writeJSON(w, http.StatusOK, c)
			return
		}
		text.WriteString(ev.Text)
	}
}

// ollamaStream answers with NDJSON, one chunk per event, as Ollama does.
// As on the OpenAI routes, a job that fails before its first event gets a
// plain error with its status; one that fails later ends with an error
// line.
func (q *Queen) ollamaStream(ctx context.Context, w http.ResponseWriter, rl *relay, model string, chat bool) {
	ev, err := rl.recv(ctx)
	if err != nil {
		writeOllamaError(w, err)
		return
	}
	setWorker(w, ev)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	send := func(v any) bool { return enc.Encode(v) == nil && rc.Flush() == nil }
	for {
		if ev.Type == schemas.EventEnd {
			c := newOllamaChunk(model, chat, "")
			c.finish(ev)
			send(c)
			return
		}
		if ev.Text != "" && !send(newOllamaChunk(model, chat, ev.Text)) {
			return // the client is gone; rl.close tells the worker
		}
		if ev, err = rl.recv(ctx); err != nil {
			if ctx.Err() == nil || errors.Is(context.Cause(ctx), errShuttingDown) {
				se := wireError(err)
				send(ollamaError{Error: se.Message, Code: se.Code})
			}
			return
		}
	}
}

// ollamaModel is one entry of /api/tags and /api/ps.
type ollamaModel struct {
	Name       string             `json:"name"`
	Model      string             `json:"model"`
	ModifiedAt time.Time          `json:"modified_at"`
	Size       int64              `json:"size"`
	Digest     string             `json:"digest"`
	Details    ollamaModelDetails `json:"details"`
	// /api/ps only:
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	SizeVRAM  *int64     `json:"size_vram,omitempty"`
}

type ollamaModelDetails struct {
	Format   string   `json:"format"`
	Family   string   `json:"family"`
	Families []string `json:"families"`
}

// ollamaModels lists the models the caller may use: all known ones for
// /api/tags, only those a live worker serves (loaded) for /api/ps.
func (q *Queen) ollamaModels(w http.ResponseWriter, r *http.Request, loadedOnly bool) {
	known, err := q.visibleModels(r.Context())
	if err != nil {
		writeOllamaError(w, err)
		return
	}
	models := []ollamaModel{}
	for _, m := range known {
		if loadedOnly && m.Status != "" {
			continue
		}
		om := ollamaModel{Name: m.ID, Model: m.ID, ModifiedAt: time.Unix(m.Created, 0).UTC(), Details: ollamaDetails}
		if loadedOnly {
			// A worker keeps its model until its hive stops it.
			never, zero := time.Time{}, int64(0)
			om.ExpiresAt, om.SizeVRAM = &never, &zero
		}
		models = append(models, om)
	}
	writeJSON(w, http.StatusOK, map[string]any{"models": models})
}

// ollamaDetails is what rbee serves: llama-family GGUF files.
var ollamaDetails = ollamaModelDetails{Format: "gguf", Family: "llama", Families: []string{"llama"}}

func (q *Queen) handleOllamaTags(w http.ResponseWriter, r *http.Request) { q.ollamaModels(w, r, false) }
func (q *Queen) handleOllamaPs(w http.ResponseWriter, r *http.Request)   { q.ollamaModels(w, r, true) }

// handleOllamaShow describes one model, as far as the queen knows it.
func (q *Queen) handleOllamaShow(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model   string `json:"model"`
		Name    string `json:"name"` // older clients
		Verbose bool   `json:"verbose"`
	}
	if err := decodeOllama(w, r, &req); err != nil {
		writeOllamaError(w, err)
		return
	}
	name := req.Model
	if name == "" {
		name = req.Name
	}
	known, err := q.visibleModels(r.Context())
	if err != nil {
		writeOllamaError(w, err)
		return
	}
	for _, m := range known {
		if m.ID != name {
			continue
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"modelfile":    "",
			"parameters":   "",
			"template":     "",
			"details":      ollamaDetails,
			"model_info":   map[string]any{"general.architecture": "llama"},
			"capabilities": []string{"completion"},
			"modified_at":  time.Unix(m.Created, 0).UTC(),
		})
		return
	}
	writeOllamaError(w, schemas.Errorf(schemas.CodeModelNotFound, "model %q not found", clip(name)))
}

func (q *Queen) handleOllamaVersion(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"version": ServiceVersion})
}

// Ollama's /api/embed.

type ollamaEmbedRequest struct {
	Model      string          `json:"model"`
	Input      json.RawMessage `json:"input"`
	Truncate   *bool           `json:"truncate"`
	Options    json.RawMessage `json:"options"`
	KeepAlive  json.RawMessage `json:"keep_alive"`
	Dimensions *int            `json:"dimensions"`
}

type ollamaEmbedResponse struct {
	Model           string      `json:"model"`
	Embeddings      [][]float32 `json:"embeddings"`
	TotalDuration   int64       `json:"total_duration"`
	LoadDuration    int64       `json:"load_duration"`
	PromptEvalCount int         `json:"prompt_eval_count"`
}

// ollamaEmbed maps Ollama's embed request. Options set sampling and
// per-worker settings, none of which changes an embedding, so any option
// is refused by name rather than ignored; keep_alive is accepted, as on
// the other Ollama routes (hives unload idle workers themselves).
func (r *ollamaEmbedRequest) inferRequest() (schemas.InferRequest, error) {
	ir := schemas.InferRequest{Model: r.Model}
	if len(r.Options) > 0 && !bytes.Equal(r.Options, []byte("null")) {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(r.Options, &raw); err != nil {
			return ir, schemas.Errorf(schemas.CodeInvalidRequest, "options: want an object: %v", err)
		}
		for name := range raw {
			return ir, ollamaUnsupported("options." + name + " on /api/embed")
		}
	}
	if r.Dimensions != nil {
		return ir, ollamaUnsupported("dimensions")
	}
	inputs, err := textInput(r.Input)
	if err != nil {
		return ir, err
	}
	if err := checkInputs(inputs); err != nil {
		return ir, err
	}
	// Ollama truncates unless told not to.
	ir.Aux = schemas.Aux{Kind: schemas.KindEmbed, Input: inputs, Truncate: r.Truncate == nil || *r.Truncate}
	return ir, nil
}

func (q *Queen) handleOllamaEmbed(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req ollamaEmbedRequest
	if err := decodeOllama(w, r, &req); err != nil {
		writeOllamaError(w, err)
		return
	}
	ir, err := req.inferRequest()
	if err != nil {
		writeOllamaError(w, err)
		return
	}
	end, err := q.runAux(w, r, &ir)
	if err != nil {
		writeOllamaError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, ollamaEmbedResponse{Model: req.Model, Embeddings: end.Embeddings,
		TotalDuration: time.Since(start).Nanoseconds(), PromptEvalCount: end.Usage.PromptTokens})
}
