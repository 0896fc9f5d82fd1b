package bus

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishAttempt bounds one attempt, so that a request lost while the
// client reconnects is retried instead of waiting out the caller's deadline.
const publishAttempt = 5 * time.Second

// PublishRetry publishes msg to JetStream and returns the stream's ack. While
// no stream answers (a leader election, a stream not provisioned yet) or an
// attempt times out, it retries with backoff until ctx is done; other errors
// (a full queue, see IsQueueFull) return at once. A retry after a timeout may
// store msg twice unless it carries a Nats-Msg-Id header, which makes the
// stream drop the second copy within its duplicate window.
func PublishRetry(ctx context.Context, js jetstream.JetStream, msg *nats.Msg) (*jetstream.PubAck, error) {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, publishAttempt)
		ack, err := js.PublishMsg(actx, msg)
		cancel()
		if err == nil {
			return ack, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("publish %s: %w (last error: %v)", msg.Subject, context.Cause(ctx), err)
		}
		if !retryable(err) {
			return nil, fmt.Errorf("publish %s: %w", msg.Subject, err)
		}
		t := time.NewTimer(backoff(attempt, backoffMin, backoffMax))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("publish %s: %w (last error: %v)", msg.Subject, context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// jsClusterNotAvailable is the server's "JetStream system temporarily
// unavailable", answered while a cluster has no meta leader.
const jsClusterNotAvailable jetstream.ErrorCode = 10008

func retryable(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jsClusterNotAvailable {
		return true
	}
	return errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, context.DeadlineExceeded)
}

// IsWrongLastSequence reports whether a publish with an expected last
// (subject) sequence failed because another message was stored first: the
// fence that keeps one writer per job's events. Replicated streams answer
// with another code than single-replica ones for the same conflict.
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
