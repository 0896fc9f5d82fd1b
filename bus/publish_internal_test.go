package bus

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestIsWrongLastSequence(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence}, true},
		// Replicated streams answer the same conflict with another code.
		{fmt.Errorf("publish: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}), true},
		{&jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamNotFound}, false},
		{errors.New("wrong last sequence"), false},
		{nil, false},
	} {
		if got := IsWrongLastSequence(tc.err); got != tc.want {
			t.Errorf("IsWrongLastSequence(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
