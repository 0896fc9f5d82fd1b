package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// restartable is an embedded NATS server on a fixed port and data
// directory, so it can be stopped and started again under its clients.
type restartable struct {
	t    *testing.T
	port int
	dir  string
	e    *bus.Embedded
}

func newRestartable(t *testing.T) *restartable {
	t.Helper()
	r := &restartable{t: t, dir: t.TempDir()}
	r.start()
	r.port = r.e.Server().Addr().(*net.TCPAddr).Port
	t.Cleanup(func() { r.e.Shutdown() })
	return r
}

func (r *restartable) start() {
	r.t.Helper()
	port := r.port
	if port == 0 {
		port = -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := bus.StartEmbedded(ctx, bus.EmbeddedConfig{Port: port, DataDir: r.dir})
	if err != nil {
		r.t.Fatalf("start nats: %v", err)
	}
	r.e = e
}

func (r *restartable) restart() {
	r.t.Helper()
	r.e.Shutdown()
	r.start()
}

func (r *restartable) url() string { return "nats://127.0.0.1:" + strconv.Itoa(r.port) }

// complete posts a completion and returns its status and error code; a
// queen not listening yet reads as status 0.
func complete(t *testing.T, base string, maxTokens int) (int, string) {
	t.Helper()
	body := fmt.Sprintf(`{"model":"stories260K","prompt":"Once upon a time","max_tokens":%d,"temperature":0}`, maxTokens)
	resp, err := http.Post(base+"/v1/completions", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var answer struct {
		Error *schemas.Error `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	if answer.Error != nil {
		return resp.StatusCode, string(answer.Error.Code)
	}
	return resp.StatusCode, ""
}

// What the bus loses comes back: streams and buckets deleted by hand are
// made again by the queen while requests fail fast with a clear code, and
// a server restart with jobs queued and streaming loses none of the queued
// ones, and needs no rbee process restarted.
func TestOutagesHeal(t *testing.T) {
	srv := newRestartable(t)
	nc, err := nats.Connect(srv.url(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	subj, _ := schemas.NewSubjects("")
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr
	start(t, "queen", "--server", srv.url(), "--http", httpAddr)
	start(t, "worker", "--server", srv.url(), "--model-name", "stories260K", "--model", modelPath,
		"--worker-id", "out-1", "--slots", "2", "--ctx", "4096", "--threads", "1", "--ack-wait", "2s")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	served := func() error {
		if status, code := complete(t, base, 8); status != http.StatusOK {
			return fmt.Errorf("completion: %d %s", status, code)
		}
		return nil
	}
	poll(t, 60*time.Second, served)

	// Deleted by hand: requests fail fast with a code, then work again.
	if err := js.DeleteStream(ctx, subj.JobsStream()); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, subj.WorkersBucket()); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if status, code := complete(t, base, 8); status == http.StatusOK || code == "" {
		t.Logf("a request right after the deletion was served (%d): the queen was quicker than the test", status)
	} else if d := time.Since(began); d > 10*time.Second {
		t.Errorf("a request with the jobs stream gone took %v to fail (%d %s), want a fast answer", d, status, code)
	}
	poll(t, 60*time.Second, served)
	if _, err := js.Stream(ctx, subj.JobsStream()); err != nil {
		t.Errorf("jobs stream after healing: %v", err)
	}

	// A server restart with two streams running and twenty jobs queued.
	streams := make([]*sseReader, 2)
	for i := range streams {
		streams[i] = (&failoverBed{base: base}).stream(t, map[string]any{"model": "stories260K",
			"prompt": "Once upon a time", "max_tokens": 3000, "temperature": 0})
		streams[i].readN(3)
	}
	var queued []string
	for i := range 20 {
		id := fmt.Sprintf("queued-%d", i)
		job := fmt.Sprintf(`{"id":%q,"model":"stories260K","stream":%q,"prompt":"Once upon a time","max_tokens":16,"temperature":0}`,
			id, subj.JobEvents("outage", id))
		if _, err := js.Publish(ctx, subj.Jobs("stories260K"), []byte(job), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
		queued = append(queued, id)
	}
	srv.restart()
	for _, s := range streams {
		s.restOrError()
	}
	for _, id := range queued {
		poll(t, 90*time.Second, func() error {
			return ended(ctx, js, subj, subj.JobEvents("outage", id))
		})
	}
	poll(t, 60*time.Second, served)
}

// ended checks that a job's events end with an end event.
func ended(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, subject string) error {
	s, err := js.Stream(ctx, subj.StreamsStream())
	if err != nil {
		return err
	}
	msg, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return fmt.Errorf("%s: %w", subject, err)
	}
	events, err := schemas.DecodeEvents(nil, msg.Data)
	if err != nil {
		return err
	}
	last := events[len(events)-1]
	switch {
	case last.Type == schemas.EventEnd:
		return nil
	case last.Type == schemas.EventError:
		return fmt.Errorf("%s ended with %v", subject, last.Error)
	default:
		return errors.New(subject + " has not ended")
	}
}

// restOrError reads the stream to its end: [DONE] after the rest of the
// text, or after an error event with a code. Either is a proper end; a cut
// connection fails the test.
func (r *sseReader) restOrError() {
	r.t.Helper()
	sawError := false
	for r.sc.Scan() {
		data, ok := strings.CutPrefix(r.sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return
		}
		var chunk struct {
			Error *schemas.Error `json:"error"`
		}
		if json.Unmarshal([]byte(data), &chunk) == nil && chunk.Error != nil {
			if chunk.Error.Code == "" {
				r.t.Errorf("an error event without a code: %s", data)
			}
			sawError = true
		}
	}
	r.t.Errorf("the stream was cut (error event seen: %v): %v", sawError, r.sc.Err())
}
