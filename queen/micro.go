package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// microSubmitTimeout bounds queueing a job for a NATS requester, who has no
// context to cancel; it outlasts a JetStream leader election.
const microSubmitTimeout = 10 * time.Second

// handleInfer queues an InferRequest and relays its events to the
// request's reply subject, one event a message, then an empty message that
// ends the stream for requesters that read until one (nats req
// --wait-for-empty). A request refused before it is queued gets a micro
// error (code and message in the Nats-Service-Error headers, an
// ErrorResponse body) and the empty message. The relay runs on its own
// goroutine, so the service's subscription goes on taking requests.
func (q *Queen) handleInfer(ctx context.Context, req micro.Request) {
	if !q.inflight.add() {
		q.countInfer(q.inferError(req, schemas.Errorf(schemas.CodeShuttingDown, "the queen is shutting down")))
		return
	}
	go func() {
		defer q.inflight.done()
		q.countInfer(q.serveInfer(ctx, req))
	}()
}

func (q *Queen) countInfer(status int) {
	q.metrics.requests.WithLabelValues("infer", strconv.Itoa(status)).Inc()
}

// serveInfer runs one infer request and returns its HTTP-equivalent status.
func (q *Queen) serveInfer(ctx context.Context, req micro.Request) (status int) {
	status = http.StatusOK
	if req.Reply() == "" {
		q.log.Warn("infer request without a reply subject dropped", "subject", req.Subject())
		return http.StatusBadRequest
	}
	var ir schemas.InferRequest
	// Strict: this is rbee's own contract, and a misspelt field is a bug.
	dec := json.NewDecoder(bytes.NewReader(req.Data()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ir); err != nil {
		return q.inferError(req, schemas.Errorf(schemas.CodeInvalidRequest, "request is not a valid InferRequest: %v", err))
	}
	ir.Principal = q.natsPrincipal(req.Reply())
	sctx, cancel := context.WithTimeout(ctx, microSubmitTimeout)
	defer cancel()
	job, err := q.admit(sctx, &ir, time.Time{})
	if err != nil {
		q.log.Info("infer request refused", "model", ir.Model, "principal", ir.Principal, "err", err)
		return q.inferError(req, err)
	}
	key := ir.IdempotencyKey
	if key == "" && ir.ID != "" {
		// A client's own job ID is its idempotency key: a repeat follows.
		key = "id:" + ir.ID
	}
	rl, err := q.startRelay(sctx, job, key)
	if err != nil {
		q.logQueueError(job, err)
		return q.inferError(req, err)
	}
	defer rl.close()
	q.log.Info("job queued for a NATS requester", "job_id", rl.job.ID, "model", job.Model, "principal", job.Principal)
	rctx, requesterGone := context.WithCancelCause(ctx)
	defer requesterGone(nil)
	defer q.requesters.watch(req.Reply(), requesterGone)()
	for {
		ev, err := rl.recv(rctx)
		if err != nil && ev.Type != schemas.EventError {
			// The stream broke on this side: tell the requester in the
			// form the worker would have.
			ev = schemas.Event{JobID: rl.job.ID, Seq: rl.next, Type: schemas.EventError, Delivery: 1, Error: ptr(wireError(err))}
		}
		data, merr := schemas.AppendEvent(nil, &ev)
		if merr != nil {
			q.log.Error("encode event", "job_id", job.ID, "err", merr)
			return http.StatusInternalServerError
		}
		// As a request: the server answers on the gone subject when
		// nobody listens any more.
		relayed := &nats.Msg{Subject: req.Reply(), Reply: q.requesters.subject, Data: data}
		if perr := q.nc.PublishMsg(relayed); perr != nil {
			q.log.Warn("relay event to the requester", "job_id", job.ID, "err", perr)
			return http.StatusServiceUnavailable
		}
		if ev.Terminal() {
			if perr := q.nc.Publish(req.Reply(), nil); perr != nil {
				q.log.Warn("close the requester's stream", "job_id", job.ID, "err", perr)
			}
			if ev.Error != nil {
				return ev.Error.Code.HTTPStatus()
			}
			return http.StatusOK
		}
	}
}

func ptr[T any](v T) *T { return &v }

// natsPrincipal names who a bus request is for, from its reply subject: a
// role may receive only on its own inbox prefix (bus.InboxPrefix), so the
// answer of a reply under _INBOX_client can reach only the client identity,
// and the job is nats:client's. (A requester may name another role's
// inbox, and then never reads the answer.) A server that authenticates
// nobody makes every requester nats:anonymous; a reply under no role's
// prefix is nats:unknown (the nats CLI without --inbox-prefix, as the
// operator, who may receive anywhere). API key names hold no ':', so none
// reads as one of these.
func (q *Queen) natsPrincipal(reply string) string {
	if !q.nc.AuthRequired() {
		return "nats:anonymous"
	}
	for _, role := range bus.Roles() {
		if strings.HasPrefix(reply, bus.InboxPrefix(role)+".") {
			return "nats:" + string(role)
		}
	}
	return "nats:unknown"
}

// inferError answers req with err as a micro error and closes its stream;
// it returns the HTTP status of err's code for the requests metric. It runs
// on the request's own goroutine, so it answers through bus.AnswerError.
func (q *Queen) inferError(req micro.Request, err error) int {
	e := wireError(err)
	body, merr := json.Marshal(schemas.ErrorResponse{Error: e})
	if merr != nil {
		q.log.Error("encode infer error", "err", merr)
	}
	if perr := bus.AnswerError(q.nc, req.Reply(), string(e.Code), e.Message, body); perr != nil {
		q.log.Warn("answer infer request", "err", perr)
	}
	if perr := q.nc.Publish(req.Reply(), nil); perr != nil {
		q.log.Warn("close infer stream", "err", perr)
	}
	return e.Code.HTTPStatus()
}
