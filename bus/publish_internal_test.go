package bus

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

func TestParsePubAck(t *testing.T) {
	for _, tc := range []struct {
		data    string
		want    jetstream.PubAck
		wantErr string
	}{
		{data: `{"stream":"RBEE_JOBS","seq":42}`, want: jetstream.PubAck{Stream: "RBEE_JOBS", Sequence: 42}},
		// What the fast path leaves to the full decoder.
		{data: `{"stream":"S","domain":"hub","seq":7}`, want: jetstream.PubAck{Stream: "S", Domain: "hub", Sequence: 7}},
		{data: `{"stream":"S","seq":7,"duplicate": true}`, want: jetstream.PubAck{Stream: "S", Sequence: 7, Duplicate: true}},
		{data: `{"stream":"S\u0041","seq":7}`, want: jetstream.PubAck{Stream: "SA", Sequence: 7}},
		{data: `{"stream":"S","seq":18446744073709551616}`, wantErr: jetstream.ErrInvalidJSAck.Error()},
		{data: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"S","seq":0}`,
			wantErr: "description=wrong last sequence: 3"},
		{data: `{"stream":"","seq":7}`, wantErr: jetstream.ErrInvalidJSAck.Error()},
		{data: `{"stream":"S","seq":}`, wantErr: jetstream.ErrInvalidJSAck.Error()},
		{data: `not json`, wantErr: jetstream.ErrInvalidJSAck.Error()},
		{data: ``, wantErr: jetstream.ErrInvalidJSAck.Error()},
	} {
		got, err := parsePubAck([]byte(tc.data))
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parsePubAck(%s) = %+v, %v; want error %q", tc.data, got, err, tc.wantErr)
			}
		case err != nil || *got != tc.want:
			t.Errorf("parsePubAck(%s) = %+v, %v; want %+v", tc.data, got, err, tc.want)
		}
	}
	_, err := parsePubAck([]byte(`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"}}`))
	if !IsWrongLastSequence(err) {
		t.Errorf("a refused publish's error %v is not a wrong last sequence", err)
	}
}

// FuzzParsePubAck holds the hand-read path to encoding/json's reading of
// the same answer: whatever the fast path accepts, the full decoder reads
// alike.
func FuzzParsePubAck(f *testing.F) {
	f.Add([]byte(`{"stream":"RBEE_JOBS","seq":42}`))
	f.Add([]byte(`{"stream":"A\"B","seq":1}`))
	f.Add([]byte(`{"stream":"S","seq":01}`))
	f.Add([]byte(`{"stream":"S","seq":1}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parsePubAck(data)
		var full struct {
			Error *jetstream.APIError `json:"error"`
			*jetstream.PubAck
		}
		if jerr := json.Unmarshal(data, &full); jerr != nil || full.Error != nil || full.PubAck == nil || full.Stream == "" {
			if err == nil {
				t.Fatalf("parsePubAck(%q) = %+v, but encoding/json reads no ack (%v)", data, got, jerr)
			}
			return
		}
		if err != nil || *got != *full.PubAck {
			t.Fatalf("parsePubAck(%q) = %+v, %v; encoding/json reads %+v", data, got, err, *full.PubAck)
		}
	})
}

func BenchmarkParsePubAck(b *testing.B) {
	data := []byte(`{"stream":"RBEE_STREAMS","seq":123456}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parsePubAck(data); err != nil {
			b.Fatal(err)
		}
	}
}
