package queen

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// The no-responders status the server sends, and the header naming the
// subject nobody listened on.
const (
	statusNoResponders = "503"
	headerNatsSubject  = "Nats-Subject"
)

// errRequesterGone ends the relay of a NATS requester nobody listens for.
var errRequesterGone = errors.New("the NATS requester went away: nobody listens on its reply subject")

// requesters notices NATS requesters that went away (a `nats req` stopped
// with Ctrl-C), which core NATS does not tell: events are relayed to a
// requester as requests whose own reply subject is the queen's gone
// subject. Once nobody listens on the requester's reply subject, the
// server answers a relayed event there with a no-responders status that
// names the subject, and the request's context is cancelled, which
// cancels the job.
type requesters struct {
	subject string

	mu   sync.Mutex
	sub  *nats.Subscription
	live map[string]context.CancelCauseFunc // by the requester's reply subject
}

func newRequesters(nc *nats.Conn) *requesters {
	return &requesters{subject: nc.NewInbox(), live: map[string]context.CancelCauseFunc{}}
}

// start subscribes to the gone subject.
func (r *requesters) start(nc *nats.Conn) error {
	sub, err := nc.Subscribe(r.subject, r.handle)
	if err != nil {
		return fmt.Errorf("queen: subscribe to %s: %w", r.subject, err)
	}
	r.mu.Lock()
	r.sub = sub
	r.mu.Unlock()
	return nil
}

// watch cancels ctx's job when reply loses its listener, until stop.
func (r *requesters) watch(reply string, cancel context.CancelCauseFunc) (stop func()) {
	r.mu.Lock()
	r.live[reply] = cancel
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.live, reply)
		r.mu.Unlock()
	}
}

func (r *requesters) handle(msg *nats.Msg) {
	if msg.Header.Get("Status") != statusNoResponders {
		return
	}
	r.mu.Lock()
	cancel := r.live[msg.Header.Get(headerNatsSubject)]
	r.mu.Unlock()
	if cancel != nil {
		cancel(errRequesterGone)
	}
}

func (r *requesters) close() error {
	r.mu.Lock()
	sub := r.sub
	r.sub = nil
	r.mu.Unlock()
	if sub == nil {
		return nil
	}
	return sub.Unsubscribe()
}
