package bus

import "strconv"

// AskOnInbox sends a pull request for n more messages to p's inbox behind
// p's back, as a request p took as lost and asked for again would.
func (p *Puller) AskOnInbox(n int) error {
	return p.nc.PublishRequest(p.api, p.inbox, []byte(`{"batch":`+strconv.Itoa(n)+`,"expires":5000000000}`))
}
