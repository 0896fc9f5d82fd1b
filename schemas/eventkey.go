package schemas

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
)

// HeaderEventMAC authenticates a message on a job's events subject: the
// HMAC-SHA256, keyed by the job's EventKey, of the subject, a zero byte and
// the message's body (raw base64, no padding). All workers share one NATS
// identity, so the subject's permissions cannot tell the worker holding the
// job from any other; the key, which only the job's message carries, can.
const HeaderEventMAC = "Rbee-Event-Mac"

// EventKeyBytes is the length of a job's event key.
const EventKeyBytes = 32

// Secret is a value that must not be logged: fmt and slog print it masked.
// It travels in JSON as the plain string.
type Secret string

const masked = "[redacted]"

// String masks the secret for fmt's %v and %s.
func (Secret) String() string { return masked }

// GoString masks the secret for fmt's %#v.
func (Secret) GoString() string { return masked }

// LogValue masks the secret in slog's output.
func (Secret) LogValue() slog.Value { return slog.StringValue(masked) }

// NewEventKey returns a fresh random event key, base64 encoded, as the queen
// gives each job.
func NewEventKey() Secret {
	key := make([]byte, EventKeyBytes)
	_, _ = rand.Read(key) // never fails: the program crashes first
	return Secret(base64.StdEncoding.EncodeToString(key))
}

// EventSigner signs and checks the messages of one job's events subject.
type EventSigner struct{ key []byte }

// EventSigner decodes the job's event key: nil and no error when there is
// none (a job from an owner that checks no MAC).
func (k Secret) EventSigner() (*EventSigner, error) {
	if k == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(string(k))
	if err != nil || len(key) != EventKeyBytes {
		return nil, Errorf(CodeInvalidRequest, "event_key: want %d bytes in base64", EventKeyBytes)
	}
	return &EventSigner{key: key}, nil
}

// Sign returns the HeaderEventMAC value of data published on subject.
func (s *EventSigner) Sign(subject string, data []byte) string {
	return base64.RawStdEncoding.EncodeToString(s.sum(subject, data))
}

// Verify reports whether mac is data's on subject, in constant time.
func (s *EventSigner) Verify(subject string, data []byte, mac string) bool {
	got, err := base64.RawStdEncoding.DecodeString(mac)
	return err == nil && hmac.Equal(got, s.sum(subject, data))
}

func (s *EventSigner) sum(subject string, data []byte) []byte {
	h := hmac.New(sha256.New, s.key)
	// A subject never holds a zero byte, so no subject and body pair
	// reads as another.
	h.Write([]byte(subject))
	h.Write([]byte{0})
	h.Write(data)
	return h.Sum(nil)
}
