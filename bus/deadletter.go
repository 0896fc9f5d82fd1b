package bus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// DeadLetter is a job that will not run, as the dead-letter stream keeps
// it: the job's message byte for byte, and why it was given up.
type DeadLetter struct {
	// JobID is the job's Nats-Msg-Id; unreadable jobs may have none.
	JobID string
	// Subject is the work-queue subject the job was queued on.
	Subject string
	// Data is the job's message as it was queued.
	Data []byte
	// Code and Reason say why it was given up.
	Code   schemas.Code
	Reason string
	// Deliveries is how often the job had been delivered.
	Deliveries int
	// Worker dead-lettered it.
	Worker string

	// Set when read back: the dead-letter stream's sequence and time.
	Seq  uint64
	Time time.Time
}

// PublishDeadLetter stores d in the dead-letter stream of d.Subject's
// model and waits for the stream's ack. The job's ID is the message ID, so
// a retry after a lost ack keeps one copy.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, d DeadLetter) error {
	model, ok := subj.ModelOfJobs(d.Subject)
	if !ok {
		return fmt.Errorf("dead letter: %q is not a jobs subject", d.Subject)
	}
	msg := nats.NewMsg(subj.DeadLetters(model))
	msg.Data = d.Data
	if d.JobID != "" {
		msg.Header.Set(schemas.HeaderMsgID, d.JobID)
	}
	msg.Header.Set(schemas.HeaderDeadCode, string(d.Code))
	msg.Header.Set(schemas.HeaderDeadReason, d.Reason)
	msg.Header.Set(schemas.HeaderDeadSubject, d.Subject)
	msg.Header.Set(schemas.HeaderDeliveries, strconv.Itoa(d.Deliveries))
	msg.Header.Set(schemas.HeaderDeadWorker, d.Worker)
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("dead letter job %q: %w", d.JobID, err)
	}
	return nil
}

// ReadDeadLetters returns the dead letters of model (every model when it
// is empty), oldest first, at most limit of them (the newest limit when
// there are more; limit <= 0 means all).
func ReadDeadLetters(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, model string, limit int) ([]DeadLetter, error) {
	filter := subj.AllDeadLetters()
	if model != "" {
		filter = subj.DeadLetters(model)
	}
	stream, err := js.Stream(ctx, subj.DeadLetterStream())
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", subj.DeadLetterStream(), err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", subj.DeadLetterStream(), err)
	}
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return nil, nil
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return nil, fmt.Errorf("read dead letters: %w", err)
	}
	var out []DeadLetter
	for {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return nil, fmt.Errorf("read dead letters: %w", err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("read dead letters: %w", err)
		}
		out = append(out, deadLetterOf(msg, meta))
		if limit > 0 && len(out) > limit {
			out = out[1:]
		}
		if meta.NumPending == 0 {
			return out, nil
		}
	}
}

func deadLetterOf(msg jetstream.Msg, meta *jetstream.MsgMetadata) DeadLetter {
	h := msg.Headers()
	deliveries, _ := strconv.Atoi(h.Get(schemas.HeaderDeliveries))
	return DeadLetter{
		JobID:      h.Get(schemas.HeaderMsgID),
		Subject:    h.Get(schemas.HeaderDeadSubject),
		Data:       msg.Data(),
		Code:       schemas.Code(h.Get(schemas.HeaderDeadCode)),
		Reason:     h.Get(schemas.HeaderDeadReason),
		Deliveries: deliveries,
		Worker:     h.Get(schemas.HeaderDeadWorker),
		Seq:        meta.Sequence.Stream,
		Time:       meta.Timestamp,
	}
}
