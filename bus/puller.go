package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Puller takes jobs from a work-queue consumer for a fixed number of slots:
// it asks the server for exactly as many messages as there are free slots,
// with pull requests of its own on one inbox that lives as long as the
// Puller. jetstream's Next makes an inbox, a subscription and a request for
// every message and can have one in flight: a worker with sixteen free
// slots then took its jobs one round trip at a time. Here a slot that
// frees is asked for again at once, several together when they free
// together, and Stop withdraws every request that waits on the server,
// which otherwise would hand a draining worker jobs until it expired.
//
// Next is called from one goroutine; Done from any.
type Puller struct {
	nc       *nats.Conn
	api      string // the consumer's next-message subject
	inbox    string
	slots    int
	msgs     chan *nats.Msg
	sub      *nats.Subscription
	freed    chan struct{}
	connects chan nats.Status
	check    *time.Ticker // looks for requests lost without a word

	inUse int         // jobs handed out by Next and not Done
	asked int         // messages asked for, not received, not expired
	heard time.Time   // when the server last said anything on the inbox
	held  []*nats.Msg // jobs sent beyond the free slots, for the next ones

	stopOnce sync.Once
}

// Pull requests expire after pullExpires, and the server says every
// pullHeartbeat that a waiting one is still there: after pullLost without
// a word every request is taken as lost (a server that went down) and
// asked for again.
const (
	pullExpires   = 5 * time.Second
	pullHeartbeat = time.Second
	pullLost      = 3 * pullHeartbeat
)

// ErrConsumerGone is returned by Puller.Next when the server says the
// consumer does not exist (any more): bind it again, then call Next again.
var ErrConsumerGone = errors.New("the jobs consumer is gone")

// NewPuller subscribes to a new inbox for consumer on stream and asks for
// slots messages on it. Stop it.
func NewPuller(nc *nats.Conn, stream, consumer string, slots int) (*Puller, error) {
	if slots < 1 {
		return nil, fmt.Errorf("puller of %s: %d slots, want at least 1", consumer, slots)
	}
	p := &Puller{
		nc: nc, api: "$JS.API.CONSUMER.MSG.NEXT." + stream + "." + consumer, inbox: nc.NewInbox(), slots: slots,
		// Room for every message asked for and the server's status
		// messages: a full channel would drop jobs as a slow consumer.
		msgs:  make(chan *nats.Msg, 4*slots+256),
		freed: make(chan struct{}, slots),
	}
	sub, err := nc.ChanSubscribe(p.inbox, p.msgs)
	if err != nil {
		return nil, fmt.Errorf("puller of %s: subscribe: %w", consumer, err)
	}
	p.sub = sub
	p.connects = nc.StatusChanged(nats.CONNECTED)
	p.check = time.NewTicker(pullHeartbeat)
	p.heard = time.Now()
	return p, nil
}

// Next returns the next job for a free slot: the slot is in use until Done.
// It returns ctx's error when ctx ends, and ErrConsumerGone (with the slot
// still free) when the consumer is missing.
func (p *Puller) Next(ctx context.Context) (jetstream.Msg, error) {
	for {
		p.collectFreed()
		if len(p.held) > 0 && p.inUse < p.slots {
			m := p.held[0]
			p.held = p.held[1:]
			p.inUse++
			// Its lease starts again with the job, as a new one's would.
			msg := jobMsg{p.nc, m}
			_ = msg.InProgress()
			return msg, nil
		}
		p.ask()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-p.freed:
			p.inUse--
		case <-p.connects:
			// A reconnect loses what waited on the old connection's server.
			p.asked = 0
		case <-p.check.C:
			if p.asked > 0 && time.Since(p.heard) > pullLost {
				p.asked, p.heard = 0, time.Now()
			}
			for _, m := range p.held {
				_ = jobMsg{p.nc, m}.InProgress()
			}
		case m := <-p.msgs:
			p.heard = time.Now()
			msg, err := p.receive(m)
			if msg != nil || err != nil {
				return msg, err
			}
		}
	}
}

// receive handles one message on the inbox: a job, which takes a slot, or
// the server's word on the requests.
func (p *Puller) receive(m *nats.Msg) (jetstream.Msg, error) {
	status := m.Header.Get("Status")
	switch {
	case isJob(m):
		p.asked = max(p.asked-1, 0)
		if p.inUse >= p.slots {
			// More than asked for: requests taken as lost were not. The
			// job waits here, its lease renewed, for the next free slot:
			// handed back, it would spend one of its attempts untried,
			// and could come straight back to be handed back again.
			_ = jobMsg{p.nc, m}.InProgress()
			p.held = append(p.held, m)
			return nil, nil
		}
		p.inUse++
		return jobMsg{p.nc, m}, nil
	case status == "", status == "100": // not a job, or an idle heartbeat: the requests wait
	case status == "404", status == "408": // no messages, or a request expired (or lost its interest) with this many left
		n, err := strconv.Atoi(m.Header.Get("Nats-Pending-Messages"))
		if err != nil {
			n = p.asked
		}
		p.asked = max(p.asked-n, 0)
	case status == "409":
		// Consumer deleted, a leadership change, too many waiting: the
		// server dropped requests without saying how many.
		p.asked = 0
		if desc := m.Header.Get("Description"); desc == "Consumer Deleted" {
			return nil, ErrConsumerGone
		}
	case status == "503": // no responders: nobody serves the consumer's subject
		p.asked = 0
		return nil, ErrConsumerGone
	default:
		p.asked = 0
	}
	return nil, nil
}

// isJob reports whether m is a job, not a status: jobs have an ack subject.
func isJob(m *nats.Msg) bool { return m.Header.Get("Status") == "" && m.Reply != "" }

// collectFreed counts the slots that freed meanwhile, so that they are
// asked for together.
func (p *Puller) collectFreed() {
	for len(p.freed) > 0 {
		<-p.freed
		p.inUse--
	}
}

// ask requests what the free slots lack, in one pull request.
func (p *Puller) ask() {
	want := p.slots - p.inUse - p.asked
	if want <= 0 {
		return
	}
	req, _ := json.Marshal(struct {
		Batch     int           `json:"batch"`
		Expires   time.Duration `json:"expires"`
		Heartbeat time.Duration `json:"idle_heartbeat"`
	}{want, pullExpires, pullHeartbeat})
	if err := p.nc.PublishRequest(p.api, p.inbox, req); err != nil {
		return // not connected: asked again after the reconnect
	}
	if p.asked == 0 {
		p.heard = time.Now()
	}
	p.asked += want
}

// Done frees the slot of a job Next returned.
func (p *Puller) Done() { p.freed <- struct{}{} }

// Stop withdraws the waiting requests, so that the server sends nothing
// more, and returns the jobs that were on their way meanwhile, for the
// caller to hand back.
func (p *Puller) Stop(ctx context.Context) []jetstream.Msg {
	var left []jetstream.Msg
	p.stopOnce.Do(func() {
		p.nc.RemoveStatusListener(p.connects)
		p.check.Stop()
		closed := p.sub.StatusChanged(nats.SubscriptionClosed)
		// Drain: what the server sent before it saw the unsubscribe
		// still arrives.
		if err := p.sub.Drain(); err == nil {
			select {
			case <-closed:
			case <-ctx.Done():
			}
		}
		for _, m := range p.held {
			left = append(left, jobMsg{p.nc, m})
		}
		p.held = nil
		for len(p.msgs) > 0 {
			if m := <-p.msgs; isJob(m) {
				left = append(left, jobMsg{p.nc, m})
			}
		}
	})
	return left
}

// jobMsg is a jetstream.Msg received on a Puller's inbox.
type jobMsg struct {
	nc *nats.Conn
	m  *nats.Msg
}

func (j jobMsg) Metadata() (*jetstream.MsgMetadata, error) {
	md, err := j.m.Metadata()
	if err != nil {
		return nil, err
	}
	return &jetstream.MsgMetadata{
		Sequence:     jetstream.SequencePair{Consumer: md.Sequence.Consumer, Stream: md.Sequence.Stream},
		NumDelivered: md.NumDelivered, NumPending: md.NumPending, Timestamp: md.Timestamp,
		Stream: md.Stream, Consumer: md.Consumer, Domain: md.Domain,
	}, nil
}

func (j jobMsg) Data() []byte         { return j.m.Data }
func (j jobMsg) Headers() nats.Header { return j.m.Header }
func (j jobMsg) Subject() string      { return j.m.Subject }
func (j jobMsg) Reply() string        { return j.m.Reply }

// The acks go out on the connection itself: the message's subscription
// may be closed by then (a draining worker finishing its jobs).
func (j jobMsg) ack(body string) error { return j.nc.Publish(j.m.Reply, []byte(body)) }

func (j jobMsg) Ack() error        { return j.ack("+ACK") }
func (j jobMsg) Nak() error        { return j.ack("-NAK") }
func (j jobMsg) InProgress() error { return j.ack("+WPI") }
func (j jobMsg) Term() error       { return j.ack("+TERM") }
func (j jobMsg) TermWithReason(reason string) error {
	return j.ack("+TERM " + reason)
}
func (j jobMsg) NakWithDelay(delay time.Duration) error {
	return j.ack(fmt.Sprintf("-NAK {\"delay\": %d}", delay.Nanoseconds()))
}
func (j jobMsg) DoubleAck(ctx context.Context) error {
	_, err := j.nc.RequestWithContext(ctx, j.m.Reply, []byte("+ACK"))
	return err
}
