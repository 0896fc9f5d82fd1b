package bus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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

// Publish publishes msg to JetStream and returns the stream's ack, as
// jetstream's PublishMsg does (a stream that does not answer is retried
// twice, 250 ms apart, then ErrNoStreamResponse), but reads the ack the
// server writes for a stored message without encoding/json: at thousands
// of jobs a second, decoding every ack by reflection cost more CPU than
// the rest of the publish. Any other answer (an error, a duplicate, a
// domain) is decoded in full.
func Publish(ctx context.Context, nc *nats.Conn, msg *nats.Msg) (*jetstream.PubAck, error) {
	resp, err := nc.RequestMsgWithContext(ctx, msg)
	for retry := 0; errors.Is(err, nats.ErrNoResponders) && retry < jetstream.DefaultPubRetryAttempts; retry++ {
		t := time.NewTimer(jetstream.DefaultPubRetryWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		resp, err = nc.RequestMsgWithContext(ctx, msg)
	}
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, jetstream.ErrNoStreamResponse
	}
	if err != nil {
		return nil, err
	}
	return parsePubAck(resp.Data)
}

// storedAckPrefix and storedAckSeq frame the ack of a stored message in
// a stream without a domain: {"stream":"NAME","seq":N}.
var (
	storedAckPrefix = []byte(`{"stream":"`)
	storedAckSeq    = []byte(`","seq":`)
)

// parsePubAck reads a JetStream publish answer: the common ack of a stored
// message by hand, everything else as jetstream does.
func parsePubAck(data []byte) (*jetstream.PubAck, error) {
	if rest, ok := bytes.CutPrefix(data, storedAckPrefix); ok {
		if name, num, ok := bytes.Cut(rest, storedAckSeq); ok &&
			plainName(name) && len(num) > 1 && num[len(num)-1] == '}' &&
			(num[0] != '0' || len(num) == 2) {
			if seq, err := strconv.ParseUint(string(num[:len(num)-1]), 10, 64); err == nil {
				return &jetstream.PubAck{Stream: string(name), Sequence: seq}, nil
			}
		}
	}
	var resp struct {
		Error *jetstream.APIError `json:"error"`
		*jetstream.PubAck
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, jetstream.ErrInvalidJSAck
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("nats: %w", resp.Error)
	}
	if resp.PubAck == nil || resp.Stream == "" {
		return nil, jetstream.ErrInvalidJSAck
	}
	return resp.PubAck, nil
}

// plainName reports whether a stream name reads the same in JSON and as
// bytes: printable ASCII without quote or backslash.
func plainName(name []byte) bool {
	for _, c := range name {
		if c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return false
		}
	}
	return len(name) > 0
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
