package queen

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/rbee-dev/rbee/schemas"
)

// microSubmitTimeout bounds queueing a job for a NATS requester, who has no
// context to cancel; it outlasts a JetStream leader election.
const microSubmitTimeout = 10 * time.Second

// handleInfer queues an InferRequest whose events go straight from the
// worker to the request's reply subject: the queen answers only on failure,
// with a micro error (code and message in the Nats-Service-Error headers,
// an ErrorResponse body) followed by an empty message, which ends the
// stream for requesters that read until one.
func (q *Queen) handleInfer(ctx context.Context, req micro.Request) {
	status := http.StatusOK
	defer func() {
		q.metrics.requests.WithLabelValues("infer", strconv.Itoa(status)).Inc()
	}()
	if !q.inflight.add() {
		status = q.inferError(req, schemas.Errorf(schemas.CodeBusUnavailable, "the queen is shutting down"))
		return
	}
	defer q.inflight.done()

	if req.Reply() == "" {
		status = http.StatusBadRequest
		q.log.Warn("infer request without a reply subject dropped", "subject", req.Subject())
		return
	}
	var ir schemas.InferRequest
	// Strict: this is rbee's own contract, and a misspelt field is a bug.
	dec := json.NewDecoder(bytes.NewReader(req.Data()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ir); err != nil {
		status = q.inferError(req, schemas.Errorf(schemas.CodeInvalidRequest, "request is not a valid InferRequest: %v", err))
		return
	}
	ctx, cancel := context.WithTimeout(ctx, microSubmitTimeout)
	defer cancel()
	job, err := q.admit(ctx, &ir)
	if err != nil {
		q.log.Info("infer request refused", "model", ir.Model, "err", err)
		status = q.inferError(req, err)
		return
	}
	job.Reply = req.Reply()
	if err := q.enqueue(ctx, &job); err != nil {
		q.log.Warn("queue job", "job_id", job.ID, "model", job.Model, "err", err)
		status = q.inferError(req, err)
		return
	}
	q.log.Info("job queued for a NATS requester", "job_id", job.ID, "model", job.Model)
}

// inferError answers req with err and closes its stream; it returns the
// HTTP status of err's code for the requests metric.
func (q *Queen) inferError(req micro.Request, err error) int {
	e := wireError(err)
	body, merr := json.Marshal(schemas.ErrorResponse{Error: e})
	if merr != nil {
		q.log.Error("encode infer error", "err", merr)
	}
	if rerr := req.Error(string(e.Code), e.Message, body); rerr != nil {
		q.log.Warn("answer infer request", "err", rerr)
	}
	if perr := q.nc.Publish(req.Reply(), nil); perr != nil {
		q.log.Warn("close infer stream", "err", perr)
	}
	return e.Code.HTTPStatus()
}
