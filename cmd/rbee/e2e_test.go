package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/schemas"
)

const modelPath = "../../infer/testdata/stories260K.gguf"

var rbeeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "rbee-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	rbeeBin = filepath.Join(dir, "rbee")
	// Hives keep their data directories under the state directory, rbee up
	// its NATS identities and nats CLI contexts under the config directory,
	// unless told otherwise: the tests' go with the test run, and the
	// user's are not used.
	for k, v := range map[string]string{
		"XDG_STATE_HOME": filepath.Join(dir, "state"), "XDG_CONFIG_HOME": filepath.Join(dir, "config"),
		"RBEE_NKEYS_DIR": filepath.Join(dir, "nkeys"),
	} {
		if err := os.Setenv(k, v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	build := exec.Command("go", "build", "-o", rbeeBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build rbee:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// poll retries f until it succeeds or the deadline passes.
var poll = bustest.CheckFor

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs the rbee binary; the test stops it with SIGTERM and checks
// that it exits cleanly.
func start(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	return startEnv(t, nil, args...)
}

// startEnv is start with env added to the test's environment.
func startEnv(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(rbeeBin, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.Env = append(append(os.Environ(), "RBEE_LOG_LEVEL=warn"), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd
}

// stop signals cmd and checks that it exits cleanly within a minute.
func stop(t *testing.T, cmd *exec.Cmd, sig os.Signal) {
	t.Helper()
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s exited with %v", cmd.Args[1], err)
		}
	case <-time.After(60 * time.Second):
		t.Errorf("%s did not stop within 60s of %v", cmd.Args[1], sig)
		_ = cmd.Process.Kill()
	}
}

// greedy is what the engine itself generates, the oracle for every path.
func greedy(t *testing.T, req infer.Request) string {
	t.Helper()
	m, err := infer.Load(modelPath, infer.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	s, err := m.NewSession(512)
	if err != nil {
		t.Fatal(err)
	}
	res, err := s.Generate(context.Background(), req, func(infer.Token) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	return res.Text
}

// liveWorkers lists the workers that are ready to take jobs.
func liveWorkers(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects) ([]schemas.WorkerHeartbeat, error) {
	kv, err := js.KeyValue(ctx, subj.WorkersBucket())
	if err != nil {
		return nil, err
	}
	all, err := bus.LiveWorkers(ctx, kv, nil)
	var ready []schemas.WorkerHeartbeat
	for _, w := range all {
		if w.State == schemas.WorkerReady {
			ready = append(ready, w)
		}
	}
	return ready, err
}

func postJSON(t *testing.T, url string, body any) *http.Response {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// readSSE returns the concatenated delta contents of a chat stream and
// checks it ends with [DONE].
func readSSE(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: status %d, type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	done := false
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			break
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error *schemas.Error `json:"error"`
		}
		if err := json.Unmarshal([]byte(line), &chunk); err != nil {
			t.Fatalf("bad chunk %q: %v", line, err)
		}
		if chunk.Error != nil {
			t.Fatalf("stream error: %v", chunk.Error)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
	}
	if !done {
		t.Fatal("stream ended without data: [DONE]")
	}
	return text.String()
}

// collect reads token events on a reply subscription until the empty
// message, checking the sequence.
func collect(t *testing.T, msgs <-chan *nats.Msg) (string, schemas.Event) {
	t.Helper()
	var text strings.Builder
	var last schemas.Event
	next := 0
	timeout := time.After(60 * time.Second)
	for {
		select {
		case <-timeout:
			t.Fatalf("no end of stream after %d events", next)
		case m := <-msgs:
			if len(m.Data) == 0 {
				if last.Type != schemas.EventEnd {
					t.Fatalf("stream closed after a %q event", last.Type)
				}
				return text.String(), last
			}
			var ev schemas.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				t.Fatalf("bad event %q: %v", m.Data, err)
			}
			if err := ev.Validate(); err != nil {
				t.Fatalf("invalid event %q: %v", m.Data, err)
			}
			if ev.Seq != next {
				t.Fatalf("event seq %d, want %d", ev.Seq, next)
			}
			next++
			if ev.Type == schemas.EventError {
				t.Fatalf("error event: %v", ev.Error)
			}
			text.WriteString(ev.Text)
			last = ev
		}
	}
}

// collectEvents reads a job's event messages (one or more events each, as
// workers publish them on the job's stream subject) until the terminal
// event, checking the sequence.
func collectEvents(t *testing.T, msgs <-chan *nats.Msg) (string, schemas.Event) {
	t.Helper()
	var text strings.Builder
	next := 0
	timeout := time.After(60 * time.Second)
	for {
		select {
		case <-timeout:
			t.Fatalf("no end of the job's events after %d", next)
		case m := <-msgs:
			events, err := schemas.DecodeEvents(nil, m.Data)
			if err != nil {
				t.Fatalf("bad events %q: %v", m.Data, err)
			}
			for _, ev := range events {
				if ev.Seq != next {
					t.Fatalf("event seq %d, want %d", ev.Seq, next)
				}
				next++
				switch ev.Type {
				case schemas.EventError:
					t.Fatalf("error event: %v", ev.Error)
				case schemas.EventEnd:
					return text.String(), ev
				}
				text.WriteString(ev.Text)
			}
		}
	}
}

func TestWholePathOverTheBus(t *testing.T) {
	srv := bustest.RunServer(t)
	nc, js := bustest.Connect(t, srv)
	subj, _ := schemas.NewSubjects("")
	httpAddr := freeAddr(t)
	base := "http://" + httpAddr

	queenCmd := start(t, "queen", "--server", srv.ClientURL(), "--http", httpAddr)
	hiveCmd := start(t, "hive", "--server", srv.ClientURL(), "--id", "e2e", "--serve", "stories260K="+modelPath,
		"--replicas", "2", "--ctx", "512", "--threads", "1", "--cache-dir", t.TempDir())

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var workers []schemas.WorkerHeartbeat
	poll(t, 60*time.Second, func() error {
		var err error
		workers, err = liveWorkers(ctx, js, subj)
		if err != nil {
			return err
		}
		if len(workers) != 2 {
			return fmt.Errorf("%d ready workers, want 2", len(workers))
		}
		resp, err := http.Get(base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %d", resp.StatusCode)
		}
		return nil
	})

	t.Run("models", func(t *testing.T) {
		resp, err := http.Get(base + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var list struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
			t.Fatal(err)
		}
		if len(list.Data) != 1 || list.Data[0].ID != "stories260K" {
			t.Errorf("/v1/models lists %+v", list.Data)
		}
	})

	messages := []map[string]string{{"role": "user", "content": "Once upon a time"}}
	wantChat := greedy(t, infer.Request{Messages: []chat.Message{{Role: "user", Content: "Once upon a time"}}, MaxTokens: 48})
	wantPrompt := greedy(t, infer.Request{Prompt: "Once upon a time", MaxTokens: 48})
	if wantChat == "" || wantPrompt == "" {
		t.Fatal("the engine generated nothing")
	}

	t.Run("chat", func(t *testing.T) {
		resp := postJSON(t, base+"/v1/chat/completions", map[string]any{
			"model": "stories260K", "messages": messages, "max_tokens": 48, "temperature": 0,
		})
		defer resp.Body.Close()
		var out struct {
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
				FinishReason string `json:"finish_reason"`
			} `json:"choices"`
			Usage schemas.Usage `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("status %d: %v", resp.StatusCode, err)
		}
		if len(out.Choices) != 1 || out.Choices[0].Message.Content != wantChat {
			t.Errorf("chat content %+v, want %q", out.Choices, wantChat)
		}
		if out.Usage.CompletionTokens != 48 || out.Choices[0].FinishReason != "length" {
			t.Errorf("usage %+v finish %q", out.Usage, out.Choices[0].FinishReason)
		}
	})

	t.Run("chat stream", func(t *testing.T) {
		resp := postJSON(t, base+"/v1/chat/completions", map[string]any{
			"model": "stories260K", "messages": messages, "max_tokens": 48, "temperature": 0, "stream": true,
		})
		if got := readSSE(t, resp); got != wantChat {
			t.Errorf("streamed %q, want %q", got, wantChat)
		}
	})

	t.Run("micro service", func(t *testing.T) {
		msgs := make(chan *nats.Msg, 512)
		inbox := nc.NewRespInbox()
		sub, err := nc.ChanSubscribe(inbox, msgs)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		req := `{"model":"stories260K","prompt":"Once upon a time","max_tokens":48,"temperature":0}`
		if err := nc.PublishRequest(subj.Infer(), inbox, []byte(req)); err != nil {
			t.Fatal(err)
		}
		got, end := collect(t, msgs)
		if got != wantPrompt {
			t.Errorf("rbee.v2.infer gave %q, want %q", got, wantPrompt)
		}
		if end.Usage == nil || end.Usage.CompletionTokens != 48 {
			t.Errorf("end event usage %+v", end.Usage)
		}
	})

	t.Run("job on the work queue", func(t *testing.T) {
		msgs := make(chan *nats.Msg, 512)
		stream := subj.JobEvents("e2e", "direct-1")
		sub, err := nc.ChanSubscribe(stream, msgs)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		job := fmt.Sprintf(`{"id":"direct-1","model":"stories260K","stream":%q,"prompt":"Once upon a time","max_tokens":48,"temperature":0}`, stream)
		if _, err := js.Publish(ctx, subj.Jobs("stories260K"), []byte(job), jetstream.WithMsgID("direct-1")); err != nil {
			t.Fatal(err)
		}
		if got, _ := collectEvents(t, msgs); got != wantPrompt {
			t.Errorf("direct job gave %q, want %q", got, wantPrompt)
		}
	})

	t.Run("two concurrent streams", func(t *testing.T) {
		cons, err := js.Consumer(ctx, subj.JobsStream(), subj.JobsConsumer("stories260K"))
		if err != nil {
			t.Fatal(err)
		}
		before, err := cons.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := greedy(t, infer.Request{Messages: []chat.Message{{Role: "user", Content: "Once upon a time"}}, MaxTokens: 400})
		var wg sync.WaitGroup
		got := make([]string, 2)
		servedBy := make([]string, 2)
		for i := range got {
			wg.Go(func() {
				resp := postJSON(t, base+"/v1/chat/completions", map[string]any{
					"model": "stories260K", "messages": messages, "max_tokens": 400, "temperature": 0, "stream": true,
				})
				servedBy[i] = resp.Header.Get("X-Rbee-Worker-Id")
				got[i] = readSSE(t, resp)
			})
		}
		wg.Wait()
		for i, g := range got {
			if g != want {
				t.Errorf("stream %d gave %q, want %q", i, g, want)
			}
		}
		// Each worker has one slot, so while one streams the other must take
		// the second job.
		if servedBy[0] == "" || servedBy[0] == servedBy[1] {
			t.Errorf("streams served by workers %q and %q, want two different workers", servedBy[0], servedBy[1])
		}
		poll(t, 10*time.Second, func() error {
			info, err := cons.Info(ctx)
			if err != nil {
				return err
			}
			if n := info.Delivered.Consumer - before.Delivered.Consumer; n != 2 {
				return fmt.Errorf("consumer delivered %d jobs, want 2", n)
			}
			if info.NumAckPending != 0 {
				return fmt.Errorf("%d jobs unacknowledged", info.NumAckPending)
			}
			stream, err := js.Stream(ctx, subj.JobsStream())
			if err != nil {
				return err
			}
			si, err := stream.Info(ctx)
			if err != nil {
				return err
			}
			if si.State.Msgs != 0 {
				return fmt.Errorf("work queue holds %d messages, want 0", si.State.Msgs)
			}
			return nil
		})
	})

	t.Run("errors", func(t *testing.T) {
		resp := postJSON(t, base+"/v1/chat/completions", map[string]any{"model": "nope", "messages": messages})
		defer resp.Body.Close()
		var e schemas.ErrorResponse
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusNotFound || e.Error.Code != schemas.CodeModelNotFound {
			t.Errorf("unknown model: %d %+v", resp.StatusCode, e)
		}
	})

	stop(t, hiveCmd, syscall.SIGTERM)
	stop(t, queenCmd, syscall.SIGTERM)
	for _, w := range workers {
		poll(t, 10*time.Second, func() error {
			if err := syscall.Kill(w.PID, 0); !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("worker %s (pid %d) still running after the hive stopped", w.WorkerID, w.PID)
			}
			return nil
		})
	}
}
