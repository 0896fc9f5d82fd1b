package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// maxBodyBytes bounds a request body: a prompt is at most
// schemas.MaxPromptBytes, and JSON escaping can grow it several times.
const maxBodyBytes = 8 << 20

// readyTimeout bounds the JetStream check behind /readyz.
const readyTimeout = 2 * time.Second

func (q *Queen) routes(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	for _, rt := range q.routeTable(gatherer) {
		mux.Handle(rt.pattern, rt.handler)
	}
	return &router{q: q, mux: mux}
}

// route is one pattern the queen serves; docs/api/openapi.yaml lists
// every one (queen/openapi_test.go checks both ways).
type route struct {
	pattern string
	handler http.Handler
}

func (q *Queen) routeTable(gatherer prometheus.Gatherer) []route {
	f := func(pattern string, h http.HandlerFunc) route { return route{pattern, h} }
	return []route{
		f("POST /v1/chat/completions", q.handleChat),
		f("POST /v1/completions", q.handleCompletions),
		f("GET /v1/models", q.handleModels),
		f("GET /v1/models/{id}", q.handleModel),
		f("DELETE /v1/jobs/{id}", q.handleCancel),
		f("GET /v1/jobs/{id}", q.handleJob),
		f("POST /api/generate", q.handleOllamaGenerate),
		f("POST /api/chat", q.handleOllamaChat),
		f("GET /api/tags", q.handleOllamaTags),
		f("GET /api/ps", q.handleOllamaPs),
		f("POST /api/show", q.handleOllamaShow),
		f("GET /api/version", q.handleOllamaVersion),
		f("POST /api/embed", q.handleOllamaEmbed),
		f("POST /v1/embeddings", q.handleEmbeddings),
		f("POST /tokenize", q.handleTokenize),
		f("POST /detokenize", q.handleDetokenize),
		f("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		}),
		f("GET /readyz", q.handleReady),
		{"GET /metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})},
	}
}

// router serves mux, answers unknown paths and wrong methods with JSON
// errors, counts requests and tracks handlers for a graceful shutdown.
type router struct {
	q   *Queen
	mux *http.ServeMux
}

// HeaderRequestID carries a request's correlation ID: the client's own
// when it sends a valid one, else the queen's. Every answer has it (the
// OpenAI SDKs show it as the request ID), and the queen's log lines about
// the request carry it as request_id.
const HeaderRequestID = "X-Request-Id"

type requestIDCtx struct{}

// requestID is the request's correlation ID, "" outside a request.
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDCtx{}).(string)
	return id
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(HeaderRequestID)
	if !schemas.ValidID(id) {
		id = newJobID()[:16]
	}
	w.Header().Set(HeaderRequestID, id)
	r = r.WithContext(context.WithValue(r.Context(), requestIDCtx{}, id))
	sw := &statusWriter{ResponseWriter: w}
	endpoint := "unmatched"
	defer func() {
		rt.q.metrics.requests.WithLabelValues(endpoint, strconv.Itoa(sw.code())).Inc()
	}()
	if !rt.q.inflight.add() {
		writeError(sw, schemas.Errorf(schemas.CodeShuttingDown, "the queen is shutting down"))
		return
	}
	defer rt.q.inflight.done()

	// The pattern is a registered route (a redirect to a clean path gets the
	// route it leads to), so the endpoint label never holds a client's path.
	h, pattern := rt.mux.Handler(r)
	if pattern != "" {
		endpoint = pattern
	}
	r, ok := rt.q.authenticate(sw, r, pattern)
	if !ok {
		return
	}
	if pattern != "" {
		rt.mux.ServeHTTP(sw, r)
		return
	}
	// No route: the mux answers 404 or 405 in plain text. Keep its status
	// and headers, give errors our shape.
	rec := &recorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusNotFound:
		writeError(sw, schemas.Errorf(schemas.CodeNotFound, "no route for %s %s", r.Method, r.URL.Path))
	case http.StatusMethodNotAllowed:
		sw.Header().Set("Allow", rec.header.Get("Allow"))
		writeError(sw, schemas.Errorf(schemas.CodeMethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
	default: // any other answer of the mux passes unchanged
		for k, v := range rec.header {
			sw.Header()[k] = v
		}
		sw.WriteHeader(rec.status)
		sw.Write(rec.body.Bytes())
	}
}

// statusWriter remembers the status for the requests metric. Unwrap lets
// http.ResponseController reach the connection's Flush.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// recorder captures the mux's answer to a request no route matched.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// A failed write means the client is gone; there is no one to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// retryAfterSeconds is what a 429 asks a client to wait: long enough for a
// worker to finish a job or two.
const retryAfterSeconds = "2"

func writeError(w http.ResponseWriter, err error) {
	e := wireError(err)
	if e.Code == schemas.CodeQueueFull {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	writeJSON(w, e.Code.HTTPStatus(), schemas.ErrorResponse{Error: e})
}

// HeaderDeadline carries a request's absolute deadline (RFC 3339).
const HeaderDeadline = "X-Request-Deadline"

// requestDeadline reads the X-Request-Deadline header: zero when absent.
func requestDeadline(r *http.Request) (time.Time, error) {
	v := r.Header.Get(HeaderDeadline)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, schemas.Errorf(schemas.CodeInvalidRequest, "%s %q: want an RFC 3339 time", HeaderDeadline, v)
	}
	return t, nil
}

// handleCancel cancels a job: it stops within a token if running and never
// starts if queued. The answer does not say which: cancelling is recorded
// either way, for as long as a job may wait.
func (q *Queen) handleCancel(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !schemas.ValidID(id) {
		writeError(w, schemas.Errorf(schemas.CodeInvalidRequest, "job ID %q: want 1-128 letters, digits, '-' or '_'", id))
		return
	}
	q.cancel(r.Context(), id)
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id, "status": "cancelled"})
}

// handleJob answers a job's record, made from its events: its state (done,
// failed, cancelled, expired, or running), its text and usage.
func (q *Queen) handleJob(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !schemas.ValidID(id) {
		writeError(w, schemas.Errorf(schemas.CodeInvalidRequest, "job ID %q: want 1-128 letters, digits, '-' or '_'", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), lookupTimeout)
	defer cancel()
	st, err := bus.ReadJob(ctx, q.js, q.cfg.Subjects, id)
	switch {
	case errors.Is(err, bus.ErrJobNotFound):
		writeError(w, schemas.Errorf(schemas.CodeNotFound,
			"job %s has no events: the ID is unknown, the job is still queued, or its events are older than the events stream keeps", id))
	case err != nil:
		q.log.Warn("read a job's events", "job_id", id, "err", err)
		writeError(w, schemas.Errorf(schemas.CodeBusUnavailable, "read the job's events: %v", err))
	default:
		writeJSON(w, http.StatusOK, st)
	}
}

// readBody reads a body of at most maxBodyBytes, refusing one that is not
// UTF-8 or nests too deep.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, schemas.Errorf(schemas.CodeTooLarge, "request body exceeds %d bytes", tooBig.Limit)
		}
		return nil, schemas.Wrap(schemas.CodeCancelled, fmt.Errorf("read request body: %w", err))
	}
	if err := checkEncoding(data); err != nil {
		return nil, err
	}
	return data, nil
}

// decodeBody reads a JSON body into v, after readBody's and checkBody's
// checks.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, chat bool) error {
	data, err := readBody(w, r)
	if err != nil {
		return err
	}
	if err := checkBody(data, chat); err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return schemas.Errorf(schemas.CodeInvalidRequest, "request body is not valid JSON for this endpoint: %v", err)
	}
	return nil
}

func (q *Queen) handleChat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	q.handleOpenAI(w, r, &req, &req.commonRequest, true)
}

func (q *Queen) handleCompletions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	q.handleOpenAI(w, r, &req, &req.commonRequest, false)
}

// handleOpenAI decodes one of the OpenAI request types into req, whose
// shared fields are common, and generates its answer.
func (q *Queen) handleOpenAI(w http.ResponseWriter, r *http.Request, req interface {
	inferRequest() (schemas.InferRequest, error)
	check() error
}, common *commonRequest, chat bool) {
	if err := decodeBody(w, r, req, chat); err != nil {
		writeError(w, err)
		return
	}
	ir, err := req.inferRequest()
	if err == nil {
		err = req.check()
	}
	if err == nil {
		err = q.vetRequest(r.Context(), &ir)
	}
	if err != nil {
		q.log.Info("request refused", "model", clip(ir.Model), "principal", principal(r.Context()), "request_id", requestID(r.Context()), "err", err)
		writeError(w, err)
		return
	}
	q.generate(w, r, &ir, chat, common)
}

// vetRequest runs the checks every HTTP API's request goes through before
// it is queued: the HTTP bounds, the caller's key, the model's context.
func (q *Queen) vetRequest(ctx context.Context, ir *schemas.InferRequest) error {
	if err := checkInfer(ir); err != nil {
		return err
	}
	if ir.N > q.cfg.MaxChoices {
		return schemas.Errorf(schemas.CodeInvalidRequest, "n %d: this server gives at most %d choices", ir.N, q.cfg.MaxChoices)
	}
	if err := authorize(ctx, ir); err != nil {
		q.auditor.Record(schemas.AuditEvent{Type: schemas.AuditAuthRefused, Code: schemas.CodeOf(err),
			Principal: principal(ctx), Fingerprint: fingerprint(ctx), Model: clip(ir.Model), Reason: err.Error()})
		return err
	}
	return q.checkContext(ctx, ir)
}

// generate queues the job and answers with the whole completion or, when
// the client asked for a stream, with server-sent events.
func (q *Queen) generate(w http.ResponseWriter, r *http.Request, ir *schemas.InferRequest, chat bool, req *commonRequest) {
	ctx := r.Context()
	deadline, err := requestDeadline(r)
	if err != nil {
		writeError(w, err)
		return
	}
	job, err := q.admit(ctx, ir, deadline)
	if err != nil {
		q.log.Info("request refused", "model", ir.Model, "principal", ir.Principal, "err", err)
		writeError(w, err)
		return
	}
	key := r.Header.Get(HeaderIdempotencyKey)
	if key == "" {
		key = ir.IdempotencyKey
	}
	rl, err := q.startRelay(ctx, job, key)
	if err != nil {
		q.logQueueError(job, err)
		writeError(w, err)
		return
	}
	defer rl.close()
	q.log.Info("job queued", "job_id", rl.job.ID, "model", job.Model, "principal", job.Principal, "key_fingerprint", fingerprint(ctx),
		"request_id", requestID(ctx))
	// Operators trace a response to its job and worker on the bus; a
	// repeated request gets the original job's answer, under its ID.
	w.Header().Set("X-Rbee-Job-Id", rl.job.ID)
	a := newAPI(chat, &rl.job)
	if req.Stream {
		q.stream(ctx, w, rl, a, req.StreamOptions != nil && req.StreamOptions.IncludeUsage)
		return
	}
	choices := make([]choiceOut, a.n)
	for {
		ev, err := rl.recv(ctx)
		if err != nil {
			writeError(w, err)
			return
		}
		if ev.Type == schemas.EventEnd {
			setWorker(w, ev)
			for i := range choices {
				choices[i].finish = finishReason(ev, i)
			}
			choices[0].toolCalls = ev.ToolCalls
			writeJSON(w, http.StatusOK, a.response(choices, *ev.Usage))
			return
		}
		if ev.Index >= len(choices) {
			continue // not a choice of this job: nothing to show
		}
		c := &choices[ev.Index]
		c.text.WriteString(ev.Text)
		if ev.Logprobs != nil {
			c.logprobs = append(c.logprobs, ev.Logprobs)
		}
	}
}

func setWorker(w http.ResponseWriter, ev schemas.Event) {
	if ev.WorkerID != "" {
		w.Header().Set("X-Rbee-Worker-Id", ev.WorkerID)
	}
}

// stream relays events as SSE. The headers wait for the first event, so a
// job that fails before its first token gets a plain error with its status.
func (q *Queen) stream(ctx context.Context, w http.ResponseWriter, rl *relay, a api, includeUsage bool) {
	ev, err := rl.recv(ctx)
	if err != nil {
		writeError(w, err)
		return
	}
	setWorker(w, ev)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not hold tokens back
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	// Chunks go out when no event waits behind them, and the end's with
	// [DONE]: a job's last token, its finish and [DONE] take one write.
	ending := false
	send := func(v any) bool {
		data, err := json.Marshal(v)
		if err != nil {
			q.log.Error("encode SSE event", "job_id", rl.job.ID, "err", err)
			return false
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return false
		}
		return ending || rl.queued() || rc.Flush() == nil
	}
	done := func() { fmt.Fprint(w, "data: [DONE]\n\n"); rc.Flush() }

	// Per choice: whether its role chunk is still to come, and how much
	// of its text (in logprobs' bytes) went out.
	first, offset := make([]bool, a.n), make([]int, a.n)
	for i := range first {
		first[i] = true
	}
	// The text and logprobs of an answer that may be tool calls.
	var held strings.Builder
	var heldLP []*schemas.TokenLogprobs
	for {
		ending = ev.Type == schemas.EventEnd
		if ev.Type == schemas.EventEnd && a.tools {
			if !send(a.chunk(0, "", true, nil)) {
				return
			}
			chunks := a.toolCallChunks(ev.ToolCalls)
			if len(ev.ToolCalls) == 0 && held.Len() > 0 {
				chunks = []any{a.heldChunk(held.String(), heldLP)}
			}
			for _, c := range chunks {
				if !send(c) {
					return
				}
			}
			first[0] = false
		}
		if ev.Type == schemas.EventEnd {
			for i := range first {
				if first[i] && !send(a.chunk(i, "", true, nil)) {
					return
				}
				reason := finishReason(ev, i)
				if !send(a.chunk(i, "", false, &reason)) {
					return
				}
			}
			if includeUsage && !send(a.usageChunk(*ev.Usage)) {
				return
			}
			done()
			return
		}
		if a.tools {
			held.WriteString(ev.Text)
			if ev.Logprobs != nil {
				heldLP = append(heldLP, ev.Logprobs)
			}
		} else if i := ev.Index; i < a.n {
			if !send(a.tokenChunk(i, ev.Text, first[i], ev.Logprobs, offset[i])) {
				return // the client is gone; rl.close tells the worker
			}
			if ev.Logprobs != nil {
				offset[i] += len(ev.Logprobs.Bytes)
			}
			first[i] = false
		}
		if ev, err = rl.recv(ctx); err != nil {
			// A client still there gets the error and the stream's end;
			// one that went away gets nothing.
			if ctx.Err() == nil || errors.Is(context.Cause(ctx), errShuttingDown) {
				send(schemas.ErrorResponse{Error: wireError(err)})
				done()
			}
			return
		}
	}
}

func (q *Queen) handleModels(w http.ResponseWriter, r *http.Request) {
	models, err := q.visibleModels(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, modelList{Object: "list", Data: models})
}

// handleModel is OpenAI's models.retrieve.
func (q *Queen) handleModel(w http.ResponseWriter, r *http.Request) {
	models, err := q.visibleModels(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	id := r.PathValue("id")
	for _, m := range models {
		if m.ID == id {
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
	writeError(w, schemas.Errorf(schemas.CodeModelNotFound, "model %q not found", clip(id)))
}

// visibleModels lists the models live workers serve and hives know, those
// the caller's key may use only.
func (q *Queen) visibleModels(ctx context.Context) ([]modelInfo, error) {
	lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	workers, err := q.registry.live(lctx)
	if err != nil {
		return nil, err
	}
	models := []modelInfo{}
	for _, m := range q.models(lctx, workers) {
		if k := keyOf(ctx); k != nil && !k.Allows(m.ID) {
			continue // a key sees only the models it may use
		}
		models = append(models, m)
	}
	return models, nil
}

// handleReady answers 200 when the bus connection is up and JetStream
// answers for the jobs stream, so that a load balancer sends requests only
// to a queen that can queue them.
func (q *Queen) handleReady(w http.ResponseWriter, r *http.Request) {
	if st := q.nc.Status(); st != nats.CONNECTED {
		writeError(w, schemas.Errorf(schemas.CodeBusUnavailable, "NATS connection is %s", st))
		return
	}
	if err := q.keeper.ready(); err != nil {
		writeError(w, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	name := q.cfg.Subjects.JobsStream()
	if _, err := q.js.Stream(ctx, name); err != nil {
		writeError(w, schemas.Errorf(schemas.CodeBusUnavailable, "jobs stream %s: %v", name, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
