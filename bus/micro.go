package bus

import (
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// AnswerError answers a micro request whose reply subject is reply as
// micro's Request.Error does (code and description in the
// Nats-Service-Error headers, body as the data), but publishes on nc
// itself. Request.Error records the error in the request, which micro reads
// for its stats once the handler has returned: a handler that answers from
// a goroutine of its own would race with that read.
func AnswerError(nc *nats.Conn, reply, code, description string, body []byte) error {
	return nc.PublishMsg(&nats.Msg{Subject: reply, Data: body, Header: nats.Header{
		micro.ErrorHeader: []string{description}, micro.ErrorCodeHeader: []string{code},
	}})
}
