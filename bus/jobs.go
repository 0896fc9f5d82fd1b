package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// ErrJobNotFound is returned by ReadJob for a job with no events: unknown,
// queued and not started yet, or older than the events stream keeps.
var ErrJobNotFound = errors.New("job not found")

// ReadJob reads every stored event of job jobID, whoever owns it, and
// returns its record.
func ReadJob(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, jobID string) (schemas.JobStatus, error) {
	if !schemas.ValidID(jobID) {
		return schemas.JobStatus{}, schemas.Errorf(schemas.CodeInvalidRequest, "job ID %q is not a valid ID", jobID)
	}
	filter := subj.JobEventsAnyOwner(jobID)
	stream, err := js.Stream(ctx, subj.StreamsStream())
	if err != nil {
		return schemas.JobStatus{}, fmt.Errorf("events stream %s: %w", subj.StreamsStream(), err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return schemas.JobStatus{}, fmt.Errorf("events stream %s: %w", subj.StreamsStream(), err)
	}
	var subject string
	for s := range info.State.Subjects {
		subject = s
	}
	if subject == "" {
		return schemas.JobStatus{}, fmt.Errorf("job %s: %w", jobID, ErrJobNotFound)
	}
	// Two owners would mean two jobs under one ID; the one read is named.
	owner := strings.TrimSuffix(strings.TrimPrefix(subject, strings.TrimSuffix(subj.AllJobEvents(), ">")), "."+jobID)
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return schemas.JobStatus{}, fmt.Errorf("read the events of job %s: %w", jobID, err)
	}
	var events []schemas.Event
	var updated time.Time
	for {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return schemas.JobStatus{}, fmt.Errorf("read the events of job %s: %w", jobID, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return schemas.JobStatus{}, fmt.Errorf("read the events of job %s: %w", jobID, err)
		}
		if events, err = schemas.DecodeEvents(events, msg.Data()); err != nil {
			return schemas.JobStatus{}, fmt.Errorf("job %s, event message %d: %w", jobID, meta.Sequence.Stream, err)
		}
		updated = meta.Timestamp
		if meta.NumPending == 0 {
			return schemas.Summarize(jobID, owner, events, updated), nil
		}
	}
}
