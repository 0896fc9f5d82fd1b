package bustest_test

import (
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestProvisionedIsReadyForJobs(t *testing.T) {
	_, nc, js, subj := bustest.Provisioned(t)
	if !nc.IsConnected() {
		t.Fatalf("connection status %v", nc.Status())
	}
	msg := nats.NewMsg(subj.Jobs("m"))
	msg.Header.Set(schemas.HeaderMsgID, "j1")
	ack, err := js.PublishMsg(t.Context(), msg)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Stream != subj.JobsStream() {
		t.Errorf("job stored in %q, want %q", ack.Stream, subj.JobsStream())
	}
	if _, err := js.KeyValue(t.Context(), subj.WorkersBucket()); err != nil {
		t.Errorf("workers bucket: %v", err)
	}
}
