package bus_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// runAuditor runs an auditor for component/id, records n hive.stopping
// events (numbered in Reason), and stops it once the stream holds them.
func runAuditor(t *testing.T, nc *nats.Conn, js jetstream.JetStream, subj schemas.Subjects, component, id string, n int) {
	t.Helper()
	a, err := bus.NewAuditor(nc, subj, component, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := countAudit(t, js, subj, component, id)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.Run(ctx) })
	for i := range n {
		a.Record(schemas.AuditEvent{Type: schemas.AuditHiveStopping, HiveID: id, Reason: fmt.Sprint(i)})
	}
	checkFor(t, 10*time.Second, func() error {
		if got := countAudit(t, js, subj, component, id); got != before+n {
			return fmt.Errorf("%d events of %s %s stored, want %d", got, component, id, before+n)
		}
		return nil
	})
	cancel()
	wg.Wait()
}

func countAudit(t *testing.T, js jetstream.JetStream, subj schemas.Subjects, component, id string) int {
	t.Helper()
	n := 0
	err := bus.AuditRecords(testContext(t, 10*time.Second), js, subj, time.Time{}, func(rec bus.AuditRecord) error {
		if c, i, _ := subj.AuditProducer(rec.Subject); c == component && i == id {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func verify(t *testing.T, js jetstream.JetStream, subj schemas.Subjects) bus.AuditReport {
	t.Helper()
	report, err := bus.VerifyAudit(testContext(t, 10*time.Second), js, subj)
	if err != nil {
		t.Fatal(err)
	}
	return report
}

// Every producer's events are chained, and a producer that starts again
// continues its chain where the stream has it.
func TestAuditChainsVerifyAndResume(t *testing.T) {
	_, nc, js, subj := bustest.Provisioned(t)
	runAuditor(t, nc, js, subj, "hive", "h1", 3)
	runAuditor(t, nc, js, subj, "worker", "w1", 2)
	runAuditor(t, nc, js, subj, "hive", "h1", 2) // the hive restarted

	report := verify(t, js, subj)
	if !report.OK() || report.Events != 7 || len(report.Chains) != 2 {
		t.Fatalf("report %+v, want 7 events in 2 whole chains", report)
	}
	h1 := report.Chains[0]
	if h1.Component != "hive" || h1.Source != "h1" || h1.FirstSeq != 1 || h1.LastSeq != 5 || h1.Events != 5 {
		t.Errorf("hive chain %+v, want seq 1 to 5", h1)
	}
	var last bus.AuditRecord
	err := bus.AuditRecords(testContext(t, 10*time.Second), js, subj, time.Time{}, func(rec bus.AuditRecord) error {
		if rec.Event.Source == "h1" {
			last = rec
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if last.Event.Seq != 5 || last.Event.Reason != "1" || last.Hash != h1.LastHash || last.Event.Prev == "" ||
		last.Subject != subj.Audit("hive", "h1", schemas.AuditHiveStopping) {
		t.Errorf("last hive record %+v, want seq 5 of the second run, chained", last)
	}
}

// A burst of events, recorded faster than one round trip each, is stored
// whole and in order: none dropped, every link intact.
func TestAuditKeepsUpWithABurst(t *testing.T) {
	_, nc, js, subj := bustest.Provisioned(t)
	a, err := bus.NewAuditor(nc, subj, "queen", "q1", nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1000 // just under the queue's bound: all are recorded before Run takes any
	for i := range n {
		a.Record(schemas.AuditEvent{Type: schemas.AuditJobAccepted, JobID: fmt.Sprintf("job-%d", i), Model: "m"})
	}
	stop := a.Start()
	checkFor(t, 10*time.Second, func() error {
		if got := countAudit(t, js, subj, "queen", "q1"); got != n {
			return fmt.Errorf("%d events stored, want %d", got, n)
		}
		return nil
	})
	stop()
	if a.Dropped() != 0 {
		t.Errorf("%d events dropped", a.Dropped())
	}
	report := verify(t, js, subj)
	if !report.OK() || report.Events != n || len(report.Chains) != 1 || report.Chains[0].LastSeq != n {
		t.Fatalf("report %+v (problems %v), want one whole chain of %d", report.Chains, report.Problems, n)
	}
}

// An operator restoring an edited copy of the stream, or deleting from it,
// is found out: each way of tampering gets its own problem, at the event
// where the chain breaks.
func TestAuditVerifyFindsTampering(t *testing.T) {
	for _, tc := range []struct {
		name string
		// edit returns the body and hash to store for the i-th event (0-based)
		// of hive h1, or keep false to leave it out.
		edit func(i int, body []byte, hash string) (newBody []byte, newHash string, keep bool)
		// reorder stores the second event after the third.
		reorder bool
		want    []string // problems, each as "stream position: start of the problem"
	}{
		{name: "untouched", edit: keepAll},
		{name: "altered", edit: func(i int, body []byte, hash string) ([]byte, string, bool) {
			if i == 1 {
				return bytes.Replace(body, []byte(`"reason":"1"`), []byte(`"reason":"X"`), 1), hash, true
			}
			return body, hash, true
		}, want: []string{"2: altered"}},
		{name: "altered with its hash recomputed", edit: func(i int, body []byte, hash string) ([]byte, string, bool) {
			if i == 1 {
				body = bytes.Replace(body, []byte(`"reason":"1"`), []byte(`"reason":"X"`), 1)
				return body, bus.AuditHash(body), true
			}
			return body, hash, true
		}, want: []string{"3: broken link"}},
		{name: "removed", edit: func(i int, body []byte, hash string) ([]byte, string, bool) {
			return body, hash, i != 2
		}, want: []string{"4: removed"}},
		{name: "reordered", edit: keepAll, reorder: true, want: []string{"2: removed", "3: moved or repeated"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, nc, js, subj := bustest.Provisioned(t)
			runAuditor(t, nc, js, subj, "hive", "h1", 5)
			restore(t, js, subj, tc.edit, tc.reorder)
			report := verify(t, js, subj)
			var got []string
			for _, p := range report.Problems {
				got = append(got, fmt.Sprintf("%d: %s", p.StreamSeq-5, p.Problem))
			}
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("problem %q, want %q", got[i], tc.want[i])
				}
			}
		})
	}
}

func keepAll(_ int, body []byte, hash string) ([]byte, string, bool) { return body, hash, true }

// restore rewrites the audit stream as an operator with a backup could:
// it reads every event, purges the stream and stores them again, edited.
// The stored copies come after the 5 originals' stream sequences.
func restore(t *testing.T, js jetstream.JetStream, subj schemas.Subjects,
	edit func(int, []byte, string) ([]byte, string, bool), reorder bool) {
	t.Helper()
	ctx := testContext(t, 10*time.Second)
	type stored struct {
		subject, hash string
		body          []byte
	}
	var all []stored
	cons, err := js.OrderedConsumer(ctx, subj.EventsStream(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(5, jetstream.FetchContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	for msg := range batch.Messages() {
		all = append(all, stored{msg.Subject(), msg.Headers().Get(schemas.HeaderAuditHash), msg.Data()})
	}
	if len(all) != 5 {
		t.Fatalf("read %d events, want 5", len(all))
	}
	str, err := js.Stream(ctx, subj.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := str.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if reorder {
		all[1], all[2] = all[2], all[1]
	}
	for i, s := range all {
		body, hash, keep := edit(i, s.body, s.hash)
		msg := nats.NewMsg(s.subject)
		msg.Data, msg.Header = body, nats.Header{}
		msg.Header.Set(schemas.HeaderAuditHash, hash)
		ack, err := js.PublishMsg(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if !keep {
			if err := str.DeleteMsg(ctx, ack.Sequence); err != nil {
				t.Fatal(err)
			}
		}
	}
}
