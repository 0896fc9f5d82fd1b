package bus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
)

// pullerFixture queues n jobs for model m and returns a puller with slots
// slots on its consumer.
func pullerFixture(t *testing.T, n, slots int) (*bus.Puller, jetstream.Consumer, func(int), jetstream.JetStream) {
	return leasedPullerFixture(t, n, slots, 30*time.Second)
}

// leasedPullerFixture is pullerFixture with a job lease of ackWait.
func leasedPullerFixture(t *testing.T, n, slots int, ackWait time.Duration) (*bus.Puller, jetstream.Consumer, func(int), jetstream.JetStream) {
	t.Helper()
	_, nc, js, subj := bustest.Provisioned(t)
	ctx := testContext(t, 10*time.Second)
	cons, err := bus.EnsureJobsConsumer(ctx, js, subj, "m", ackWait, -1)
	if err != nil {
		t.Fatal(err)
	}
	queue := func(n int) {
		for i := range n {
			if _, err := js.Publish(ctx, subj.Jobs("m"), fmt.Appendf(nil, "job %d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	queue(n)
	p, err := bus.NewPuller(nc, subj.JobsStream(), subj.JobsConsumer("m"), slots)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(context.Background()) })
	return p, cons, queue, js
}

// nothingFor checks that Next hands out no job within d.
func nothingFor(t *testing.T, p *bus.Puller, d time.Duration, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	if msg, err := p.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s: %v, %v; want no job", what, msg, err)
	}
}

// consumerState is what the server says of the consumer: jobs delivered
// and not acked, jobs not delivered, pull requests waiting.
func consumerState(t *testing.T, cons jetstream.Consumer) (ackPending, pending, waiting int) {
	t.Helper()
	info, err := cons.Info(testContext(t, 5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return info.NumAckPending, int(info.NumPending), info.NumWaiting
}

func TestPullerTakesOneJobPerFreeSlot(t *testing.T) {
	p, cons, _, _ := pullerFixture(t, 5, 3)
	ctx := testContext(t, 10*time.Second)
	var taken []jetstream.Msg
	for range 3 {
		msg, err := p.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		taken = append(taken, msg)
	}
	// Every slot is busy: nothing more is asked for, so nothing comes.
	nothingFor(t, p, 300*time.Millisecond, "a fourth job with three slots busy")
	if ackPending, pending, _ := consumerState(t, cons); ackPending != 3 || pending != 2 {
		t.Fatalf("with 3 slots busy the server holds %d delivered and %d queued, want 3 and 2", ackPending, pending)
	}
	if err := taken[0].Ack(); err != nil {
		t.Fatal(err)
	}
	p.Done()
	msg, err := p.Next(ctx)
	if err != nil {
		t.Fatalf("a slot freed: %v", err)
	}
	if meta, err := msg.Metadata(); err != nil || meta.Sequence.Stream != 4 || meta.NumDelivered != 1 {
		t.Fatalf("the next job: %+v, %v; want stream sequence 4, first delivery", meta, err)
	}
}

func TestPullerStopWithdrawsItsRequests(t *testing.T) {
	p, cons, queue, _ := pullerFixture(t, 0, 4)
	ctx := testContext(t, 10*time.Second)
	// Next asks for four; the requests wait on the server.
	nothingFor(t, p, 200*time.Millisecond, "an empty queue")
	bustest.CheckFor(t, 5*time.Second, func() error {
		if _, _, waiting := consumerState(t, cons); waiting != 1 {
			return fmt.Errorf("%d pull requests wait, want 1 (of batch 4)", waiting)
		}
		return nil
	})
	if left := p.Stop(ctx); len(left) != 0 {
		t.Fatalf("stopped with an empty queue: %d jobs left", len(left))
	}
	queue(2)
	// A job queued after Stop is not delivered to the stopped puller: the
	// server skips the requests of an inbox nobody listens on.
	bustest.CheckFor(t, 5*time.Second, func() error {
		if ackPending, pending, waiting := consumerState(t, cons); ackPending != 0 || pending != 2 || waiting != 0 {
			return fmt.Errorf("after Stop: %d delivered, %d queued, %d waiting requests; want 0, 2, 0", ackPending, pending, waiting)
		}
		return nil
	})
}

func TestPullerSaysWhenTheConsumerIsGone(t *testing.T) {
	p, cons, _, js := pullerFixture(t, 0, 2)
	ctx := testContext(t, 10*time.Second)
	nothingFor(t, p, 200*time.Millisecond, "an empty queue")
	info := cons.CachedInfo()
	if err := js.DeleteConsumer(ctx, info.Stream, info.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Next(ctx); !errors.Is(err, bus.ErrConsumerGone) {
		t.Fatalf("the consumer deleted: %v, want ErrConsumerGone", err)
	}
}

// A job the server sends beyond the free slots (a request the puller took
// as lost was not) waits for the next free slot with its lease renewed: it
// is not handed back, which would spend one of its attempts untried.
func TestPullerKeepsAJobSentBeyondItsSlots(t *testing.T) {
	const lease = 2 * time.Second
	p, cons, _, _ := leasedPullerFixture(t, 2, 1, lease)
	ctx := testContext(t, 20*time.Second)
	first, err := p.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AskOnInbox(1); err != nil {
		t.Fatal(err)
	}
	bustest.CheckFor(t, 5*time.Second, func() error {
		if ackPending, pending, _ := consumerState(t, cons); ackPending != 2 || pending != 0 {
			return fmt.Errorf("%d delivered, %d queued; want both jobs delivered", ackPending, pending)
		}
		return nil
	})
	// Held past its lease, the second job stays with the puller, and the
	// first slot stays busy: nothing is handed out.
	nothingFor(t, p, lease+lease/2, "a job with the only slot busy")
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	p.Done()
	second, err := p.Next(ctx)
	if err != nil {
		t.Fatalf("a slot freed: %v", err)
	}
	if meta, err := second.Metadata(); err != nil || meta.Sequence.Stream != 2 || meta.NumDelivered != 1 {
		t.Fatalf("the held job: %+v, %v; want stream sequence 2, first delivery", meta, err)
	}
	if info, err := cons.Info(ctx); err != nil || info.NumRedelivered != 0 {
		t.Fatalf("consumer: %+v, %v; want no redelivery", info, err)
	}
}
