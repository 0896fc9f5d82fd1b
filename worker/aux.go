package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
)

// The jobs that do not generate (embed, tokenize, detokenize) answer with
// one end event holding their whole result.

// eventHeadroom is kept free of a message's payload limit for the event's
// other fields and the headers.
const eventHeadroom = 4 << 10

// maxFloatBytes bounds one float32 in JSON with its comma: the shortest
// representation is at most "-1.2345678e-05".
const maxFloatBytes = 16

// auxEngine holds the model for the jobs that only read it: its tokenizer,
// and an embedder made on the first embed job.
type auxEngine struct {
	model  *infer.Model
	ctxLen int

	mu       sync.Mutex // one embed job at a time: the embedder is one batch
	embedder *infer.Embedder
}

func newAuxEngine(m *infer.Model, ctxLen int) *auxEngine {
	return &auxEngine{model: m, ctxLen: ctxLen}
}

// run computes job's result into end, limited to limit bytes of event.
func (a *auxEngine) run(ctx context.Context, job schemas.Job, limit int, end *schemas.Event) error {
	tok := a.model.Tokenizer()
	switch job.Kind {
	case schemas.KindTokenize:
		ids, err := tok.Encode(job.Prompt, job.AddSpecial, job.ParseSpecial)
		if err != nil {
			return schemas.Wrap(schemas.CodeInvalidRequest, fmt.Errorf("tokenize: %w", err))
		}
		end.Tokens, end.Usage.PromptTokens = ids, len(ids)
		if job.WithPieces {
			end.Pieces = make([]string, len(ids))
			for i, id := range ids {
				end.Pieces[i] = string(tok.Piece(id))
			}
		}
	case schemas.KindDetokenize:
		for i, id := range job.Tokens {
			if int(id) >= tok.VocabSize() {
				return schemas.Errorf(schemas.CodeInvalidRequest, "tokens[%d] is %d, outside the vocabulary of %d", i, id, tok.VocabSize())
			}
		}
		end.Content, end.Usage.PromptTokens = tok.Decode(job.Tokens), len(job.Tokens)
	case schemas.KindEmbed:
		return a.embed(ctx, job, limit, end)
	default:
		return schemas.Errorf(schemas.CodeInvalidRequest, "kind %q is not served by this worker", job.Kind)
	}
	return nil
}

// embed tokenizes every input (with BOS, without reading special tokens'
// text) and embeds them, several to a step. Vectors that could not fit in
// one message are refused before any is computed.
func (a *auxEngine) embed(ctx context.Context, job schemas.Job, limit int, end *schemas.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.embedder == nil {
		em, err := a.model.NewEmbedder(a.ctxLen)
		if err != nil {
			return err
		}
		a.embedder = em
	}
	em := a.embedder
	if need := len(job.Input) * em.Dim() * maxFloatBytes; need > limit {
		return schemas.Errorf(schemas.CodeTooLarge,
			"%d embeddings of %d values may take %d bytes, more than a bus message holds (%d): send at most %d inputs",
			len(job.Input), em.Dim(), need, limit, max(1, limit/(em.Dim()*maxFloatBytes)))
	}
	seqs := make([][]int32, len(job.Input))
	for i, text := range job.Input {
		ids, err := a.model.Tokenizer().Encode(text, true, false)
		if err != nil {
			return schemas.Wrap(schemas.CodeInvalidRequest, fmt.Errorf("input[%d]: tokenize: %w", i, err))
		}
		if len(ids) > em.ContextLength() {
			if !job.Truncate {
				return schemas.Errorf(schemas.CodeContextExceeded, "input[%d] has %d tokens, the context holds %d", i, len(ids), em.ContextLength())
			}
			ids = ids[:em.ContextLength()]
		}
		seqs[i] = ids
		end.Usage.PromptTokens += len(ids)
	}
	vs, err := em.EmbedBatch(ctx, seqs)
	if err != nil {
		return fmt.Errorf("embed: %w", err)
	}
	end.Embeddings = vs
	return nil
}

// runAux runs a job that does not generate, from its cancel watch and
// deadline (set up by run) to the ack: it keeps the lease while it works,
// then publishes the one event that ends the stream.
func (w *Worker) runAux(ctx, jobCtx context.Context, stop context.CancelCauseFunc, log *slog.Logger, msg jetstream.Msg, es *eventStream, job schemas.Job, taken, queuedAt time.Time) {
	var bg sync.WaitGroup
	leaseCtx, stopLease := context.WithCancel(jobCtx)
	bg.Go(func() { w.keepLease(leaseCtx, log, msg, stop) })
	end := schemas.Event{Type: schemas.EventEnd, StopReason: schemas.StopReasonStop, Usage: &schemas.Usage{}}
	err := w.aux.run(jobCtx, job, int(w.nc.MaxPayload())-eventHeadroom, &end)
	if err == nil {
		err = checkSize(end, int(w.nc.MaxPayload())-eventHeadroom)
	}
	stopLease()
	bg.Wait()

	code, act := settle(err, context.Cause(jobCtx))
	var se *schemas.Error
	if err != nil && code != "" && errors.As(err, &se) && context.Cause(jobCtx) == nil {
		code = se.Code // the job's own fault, with its code
	}
	var usage *schemas.Usage
	var jobTimings *schemas.Timings
	switch {
	case act != actAck || errors.Is(context.Cause(jobCtx), errEnded):
	case code == "":
		usage, jobTimings = end.Usage, timings(infer.Timings{}, taken, queuedAt)
		usage.TotalTokens = usage.PromptTokens
		end.Timings = jobTimings
		es.add(end)
		log.Info("job done", "kind", job.Kind, "prompt_tokens", usage.PromptTokens, "total_ms", jobTimings.TotalMillis)
	default:
		cause := err
		if c := context.Cause(jobCtx); c != nil {
			cause = c
		}
		es.add(schemas.Event{Type: schemas.EventError, Error: schemas.Errorf(code, "%s", errorText(cause))})
		log.Info("job failed", "kind", job.Kind, "code", code, "err", err)
	}
	if act == actAck {
		es.close()
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.lease())
		defer cancel()
		go es.run(pctx)
		switch outcome := es.wait(); {
		case errors.Is(outcome, errFenced):
			act = actLeave
		case outcome != nil && !errors.Is(outcome, errEnded):
			log.Warn("publish the job's events; handing the job back", "err", outcome)
			act = actNak
		}
	}
	w.settleMsg(log, msg, act)
	w.record(log, msg, job, act, code, usage, jobTimings)
}

// errorText is an error's message without its code prefix.
func errorText(err error) string {
	if se := (*schemas.Error)(nil); errors.As(err, &se) {
		return se.Message
	}
	return err.Error()
}

// checkSize refuses an end event larger than limit bytes.
func checkSize(end schemas.Event, limit int) error {
	data, err := schemas.EncodeEvents([]schemas.Event{end})
	if err != nil {
		return err
	}
	if len(data) > limit {
		return schemas.Errorf(schemas.CodeTooLarge, "the result takes %d bytes, more than a bus message holds (%d): send less", len(data), limit)
	}
	return nil
}
