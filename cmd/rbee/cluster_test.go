package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/chat"
	"github.com/rbee-dev/rbee/schemas"
)

// clusterBed is rbee on a three-node NATS cluster: streams and buckets with
// three replicas, two queens on different servers and two workers of the
// bundled model on different servers. Every process is given all three
// servers, so it can reconnect to the others when its own goes.
type clusterBed struct {
	servers []*server.Server
	urls    string
	nc      *nats.Conn
	js      jetstream.JetStream
	subj    schemas.Subjects
	queens  []clusterProc
	workers []clusterProc
}

// clusterProc is an rbee process and the server it connected to.
type clusterProc struct {
	cmd  *exec.Cmd
	base string // a queen's HTTP base URL
	on   int    // index in servers
}

const (
	clusterModel = "stories260K"
	// clusterLease is the workers' job lease: short, so a job whose
	// delivery was lost with a server goes to a worker again within
	// seconds, yet several round trips long on a loaded machine.
	clusterLease = 3 * time.Second
	// clusterAccount is the account the servers keep rbee's streams in.
	clusterAccount = server.DEFAULT_GLOBAL_ACCOUNT
)

func newClusterBed(t *testing.T) *clusterBed {
	t.Helper()
	b := &clusterBed{servers: bustest.RunCluster(t, 3)}
	b.urls = bustest.ClusterURLs(b.servers)
	b.subj, _ = schemas.NewSubjects("")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.Config{URL: b.urls, Name: "cluster-test"}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b.nc = nc
	if b.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}

	// rbee provision makes everything with three replicas.
	pctx, pcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer pcancel()
	out, err := exec.CommandContext(pctx, rbeeBin, "provision", "--server", b.urls, "--replicas", "3").CombinedOutput()
	if err != nil {
		t.Fatalf("rbee provision --replicas 3: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "(3 replicas)") {
		t.Errorf("rbee provision said %q", out)
	}
	for _, name := range b.replicated() {
		s, err := b.js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if info := s.CachedInfo(); info.Config.Replicas != 3 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
			t.Fatalf("stream %s: %d replicas configured, cluster %+v; want three", name, info.Config.Replicas, info.Cluster)
		}
	}

	// The client shuffles the servers it is given, so where a process
	// lands is chance: one that joins its twin's server is started again.
	q := b.startPlaced(t, "rbee-queen", -1, b.queenArgs(t))
	b.queens = append(b.queens, q, b.startPlaced(t, "rbee-queen", q.on, b.queenArgs(t)))
	w := b.startPlaced(t, "rbee-worker", -1, b.workerArgs("cl-1"))
	b.workers = append(b.workers, w, b.startPlaced(t, "rbee-worker", w.on, b.workerArgs("cl-2")))

	poll(t, 60*time.Second, func() error {
		ws, err := liveWorkers(ctx, b.js, b.subj)
		if err != nil || len(ws) != 2 {
			return fmt.Errorf("%d ready workers (%v), want 2", len(ws), err)
		}
		for _, q := range b.queens {
			resp, err := http.Get(q.base + "/readyz")
			if err != nil {
				return err
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s/readyz: %d", q.base, resp.StatusCode)
			}
		}
		return nil
	})
	return b
}

// replicated is every stream rbee provisions, the buckets' included.
func (b *clusterBed) replicated() []string {
	return []string{b.subj.JobsStream(), b.subj.StreamsStream(), b.subj.EventsStream(),
		"KV_" + b.subj.WorkersBucket(), "KV_" + b.subj.CancelsBucket(), "KV_" + b.subj.IdempotencyBucket()}
}

func (b *clusterBed) queenArgs(t *testing.T) func() ([]string, string) {
	return func() ([]string, string) {
		addr := freeAddr(t)
		return []string{"queen", "--server", b.urls, "--http", addr, "--replicas", "3"}, "http://" + addr
	}
}

func (b *clusterBed) workerArgs(id string) func() ([]string, string) {
	return func() ([]string, string) {
		return []string{"worker", "--server", b.urls, "--model-name", clusterModel, "--model", modelPath,
			"--worker-id", id, "--slots", "2", "--ctx", "512", "--threads", "1", "--ack-wait", clusterLease.String()}, ""
	}
}

// connKey names a client connection of one server.
type connKey struct {
	server int
	cid    uint64
}

// conns lists the connections of clients called name on the running
// servers.
func (b *clusterBed) conns(t *testing.T, name string) map[connKey]bool {
	t.Helper()
	out := map[connKey]bool{}
	for i, s := range b.servers {
		if !s.Running() {
			continue
		}
		cz, err := s.Connz(&server.ConnzOptions{})
		if err != nil {
			t.Fatalf("connz of %s: %v", s.Name(), err)
		}
		for _, c := range cz.Conns {
			if c.Name == name {
				out[connKey{i, c.Cid}] = true
			}
		}
	}
	return out
}

// startPlaced starts an rbee process, which opens one connection called
// name, and returns it with the server it connected to, which is not
// avoid: landing there, it is killed and started again.
func (b *clusterBed) startPlaced(t *testing.T, name string, avoid int, args func() ([]string, string)) clusterProc {
	t.Helper()
	for range 20 {
		before := b.conns(t, name)
		argv, base := args()
		p := clusterProc{cmd: start(t, argv...), base: base, on: -1}
		poll(t, 30*time.Second, func() error {
			for k := range b.conns(t, name) {
				if !before[k] {
					p.on = k.server
					return nil
				}
			}
			return fmt.Errorf("%s has not connected", argv[0])
		})
		if p.on != avoid {
			t.Logf("%s (pid %d) connected to %s", argv[0], p.cmd.Process.Pid, b.servers[p.on].Name())
			return p
		}
		// It is discarded, started or not: a clean exit is not the point.
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
	t.Fatalf("%s landed on %s twenty times", name, b.servers[avoid].Name())
	return clusterProc{}
}

// leaderGroup is a raft group the job path depends on: a stream, or a
// consumer of one.
type leaderGroup struct{ stream, consumer string }

func (g leaderGroup) String() string {
	if g.consumer == "" {
		return g.stream
	}
	return g.stream + "/" + g.consumer
}

// groups are the streams and the consumer every job goes through: the
// work queue and its workers' consumer, the job events, the workers and
// cancels buckets.
func (b *clusterBed) groups() []leaderGroup {
	return []leaderGroup{{stream: b.subj.JobsStream()}, {stream: b.subj.JobsStream(), consumer: b.subj.JobsConsumer(clusterModel)},
		{stream: b.subj.StreamsStream()}, {stream: "KV_" + b.subj.WorkersBucket()}, {stream: "KV_" + b.subj.CancelsBucket()}}
}

func (b *clusterBed) leads(i int, g leaderGroup) bool {
	if g.consumer == "" {
		return b.servers[i].JetStreamIsStreamLeader(clusterAccount, g.stream)
	}
	return b.servers[i].JetStreamIsConsumerLeader(clusterAccount, g.stream, g.consumer)
}

// moveLeaders asks each group's leader to hand over to server to, and
// waits until to leads them all.
func (b *clusterBed) moveLeaders(t *testing.T, to int) {
	t.Helper()
	req, _ := json.Marshal(server.JSApiLeaderStepdownRequest{Placement: &server.Placement{Preferred: b.servers[to].Name()}})
	for _, g := range b.groups() {
		subject := fmt.Sprintf(server.JSApiStreamLeaderStepDownT, g.stream)
		if g.consumer != "" {
			subject = fmt.Sprintf(server.JSApiConsumerLeaderStepDownT, g.stream, g.consumer)
		}
		var asked time.Time
		poll(t, 30*time.Second, func() error {
			if b.leads(to, g) {
				return nil
			}
			if time.Since(asked) < 2*time.Second {
				return fmt.Errorf("%s has not moved to %s", g, b.servers[to].Name())
			}
			asked = time.Now()
			msg, err := b.nc.Request(subject, req, 5*time.Second)
			if err != nil {
				return fmt.Errorf("step down %s: %w", g, err)
			}
			var resp server.JSApiStreamLeaderStepDownResponse
			if err := json.Unmarshal(msg.Data, &resp); err != nil {
				return err
			}
			if resp.Error != nil {
				return fmt.Errorf("step down %s: %v", g, resp.Error)
			}
			return fmt.Errorf("%s asked to move to %s", g, b.servers[to].Name())
		})
	}
}

// clusterReq is one request of the flow.
type clusterReq struct {
	i            int
	queen        int
	chat, stream bool
	prompt       string
	want         string
}

func (r clusterReq) String() string {
	kind := "completion"
	if r.chat {
		kind = "chat"
	}
	if r.stream {
		kind += " stream"
	}
	return fmt.Sprintf("request %d (%s to queen %d, %q)", r.i, kind, r.queen, r.prompt)
}

// clusterAttempt is one try of a request: refused at admission (a status
// and a code, no job), or a job that ran to its answer or failed.
type clusterAttempt struct {
	began, ended time.Time
	status       int
	jobID        string // set once the queen queued the job
	worker       string
	code         schemas.Code
	retryable    bool
	text         string
	err          error // a cut connection, a broken stream, an error event, a missed deadline
}

// clusterResult is a request's attempts, the last one its outcome.
type clusterResult struct {
	req      clusterReq
	attempts []clusterAttempt
}

func (r clusterResult) last() clusterAttempt { return r.attempts[len(r.attempts)-1] }

const clusterMaxTokens = 32

func (r clusterReq) body() map[string]any {
	body := map[string]any{"model": clusterModel, "max_tokens": clusterMaxTokens, "temperature": 0, "stream": r.stream}
	if r.chat {
		body["messages"] = []map[string]string{{"role": "user", "content": r.prompt}}
	} else {
		body["prompt"] = r.prompt
	}
	return body
}

// send runs a request until it is answered: an attempt the queen refused
// with a retryable code is tried again after a short pause, as a client
// honouring Retry-After would; anything else ends it. ctx bounds it all.
func (b *clusterBed) send(ctx context.Context, client *http.Client, r clusterReq) clusterResult {
	res := clusterResult{req: r}
	for n := 1; ; n++ {
		a := b.try(ctx, client, r)
		res.attempts = append(res.attempts, a)
		if a.err != nil || a.jobID != "" || a.status == http.StatusOK || !a.retryable {
			return res
		}
		pause := time.NewTimer(min(time.Duration(n)*100*time.Millisecond, time.Second))
		select {
		case <-pause.C:
		case <-ctx.Done():
			pause.Stop()
			res.attempts = append(res.attempts, clusterAttempt{began: time.Now(), ended: time.Now(),
				err: fmt.Errorf("still refused when the request's deadline passed: %w", ctx.Err())})
			return res
		}
	}
}

func (b *clusterBed) try(ctx context.Context, client *http.Client, r clusterReq) (a clusterAttempt) {
	a.began = time.Now()
	defer func() { a.ended = time.Now() }()
	path := "/v1/completions"
	if r.chat {
		path = "/v1/chat/completions"
	}
	data, _ := json.Marshal(r.body())
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, b.queens[r.queen].base+path, strings.NewReader(string(data)))
	if err != nil {
		a.err = err
		return a
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		a.err = err
		return a
	}
	defer resp.Body.Close()
	a.status, a.jobID, a.worker = resp.StatusCode, resp.Header.Get("X-Rbee-Job-Id"), resp.Header.Get("X-Rbee-Worker-Id")
	if resp.StatusCode != http.StatusOK {
		var e schemas.ErrorResponse
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			a.err = fmt.Errorf("status %d with an unreadable error: %w", resp.StatusCode, err)
			return a
		}
		a.code, a.retryable = e.Error.Code, e.Error.Retryable
		return a
	}
	if r.stream {
		a.text, a.err = readClusterStream(resp)
	} else {
		a.text, a.err = readClusterAnswer(resp, r.chat)
	}
	return a
}

// readClusterAnswer reads a whole completion's text.
func readClusterAnswer(resp *http.Response, chat bool) (string, error) {
	var out struct {
		Choices []struct {
			Text    string `json:"text"`
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return "", fmt.Errorf("read the answer: %w", err)
	}
	if len(out.Choices) != 1 || out.Choices[0].FinishReason == "" {
		return "", fmt.Errorf("answer with choices %+v", out.Choices)
	}
	if chat {
		return out.Choices[0].Message.Content, nil
	}
	return out.Choices[0].Text, nil
}

// readClusterStream reads an SSE completion, chat or not, to [DONE]; an
// error chunk or a stream cut before [DONE] is an error.
func readClusterStream(resp *http.Response) (string, error) {
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		return "", fmt.Errorf("stream of type %q", ct)
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return text.String(), nil
		}
		var chunk struct {
			Choices []struct {
				Text  string `json:"text"`
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error *schemas.Error `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return text.String(), fmt.Errorf("chunk %q: %w", data, err)
		}
		if chunk.Error != nil {
			return text.String(), fmt.Errorf("error in the stream: %w", chunk.Error)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Text + c.Delta.Content)
		}
	}
	err := sc.Err()
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return text.String(), fmt.Errorf("the stream ended without [DONE]: %w", err)
}

// clusterOracle is what the engine alone writes for each prompt, as a
// completion and as a chat, keyed by chat and prompt.
func clusterOracle(t *testing.T, prompts []string) map[bool]map[string]string {
	t.Helper()
	m, err := infer.Load(modelPath, infer.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := map[bool]map[string]string{false: {}, true: {}}
	for _, p := range prompts {
		for _, isChat := range []bool{false, true} {
			req := infer.Request{Prompt: p, MaxTokens: clusterMaxTokens}
			if isChat {
				req = infer.Request{Messages: []chat.Message{{Role: "user", Content: p}}, MaxTokens: clusterMaxTokens}
			}
			s, err := m.NewSession(512)
			if err != nil {
				t.Fatal(err)
			}
			res, err := s.Generate(context.Background(), req, func(infer.Token) error { return nil })
			if err != nil {
				t.Fatal(err)
			}
			if res.Text == "" {
				t.Fatalf("the engine wrote nothing for %q (chat %v)", p, isChat)
			}
			out[isChat][p] = res.Text
		}
	}
	return out
}

// The same code scales out: on a three-node cluster with three-replica
// streams and buckets, two queens serve at once, and stopping the server
// that leads the work queue, its consumer, the job events and the buckets
// while jobs flow loses none: every job a queen accepted ends with exactly
// the text the engine writes alone, a request refused meanwhile is refused
// with a retryable status and code, none hangs, and jobs go on completing
// on both queens under the new leaders.
func TestClusterLeaderStopWhileJobsFlow(t *testing.T) {
	b := newClusterBed(t)

	// The server to stop hosts a queen and a worker (two queens and two
	// workers on different servers of three share one at least), and
	// leads every group a job goes through.
	target := -1
	for _, q := range b.queens {
		for _, w := range b.workers {
			if q.on == w.on {
				target = q.on
			}
		}
	}
	if target < 0 {
		t.Fatal("no server hosts both a queen and a worker")
	}
	b.moveLeaders(t, target)
	victim := b.servers[target]
	t.Logf("stopping %s, leader of %v, mid-flow", victim.Name(), b.groups())

	prompts := []string{"Once upon a time", "The little dog", "Lily went to the park", "Tom had a red ball"}
	oracle := clusterOracle(t, prompts)
	// Four clients keep four requests going: the server stops once eight
	// are answered, and sixteen more start after it is gone.
	const clients, stopAfter, afterStop, most = 4, 8, 16, 48
	request := func(i int) clusterReq {
		r := clusterReq{i: i, queen: (i / 2) % 2, chat: i%3 == 0, stream: i%2 == 1, prompt: prompts[i%len(prompts)]}
		r.want = oracle[r.chat][r.prompt]
		return r
	}

	// Each request, retries included, has a deadline well inside the
	// queens' own timeouts, so one that hangs fails the test.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	client := &http.Client{}
	work := make(chan clusterReq)
	results := make(chan clusterResult, most)
	stopped := make(chan struct{})
	fed := make(chan int, 1) // how many requests the feeder sent, once it is done
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(work)
		post := -1 // requests fed since the stop; -1 before it
		i := 0
		defer func() { fed <- i }()
		for ; post < afterStop && i < most; i++ {
			if post < 0 {
				select {
				case <-stopped:
					post = 0
				default:
				}
			}
			select {
			case work <- request(i):
			case <-ctx.Done():
				return
			}
			if post >= 0 {
				post++
			}
		}
	})
	for range clients {
		wg.Go(func() {
			for r := range work {
				rctx, rcancel := context.WithTimeout(ctx, 40*time.Second)
				results <- b.send(rctx, client, r)
				rcancel()
			}
		})
	}
	defer func() {
		cancel()
		wg.Wait()
		client.CloseIdleConnections()
	}()

	var all []clusterResult
	var stoppedAt time.Time
	for total := -1; total < 0 || len(all) < total; {
		select {
		case r := <-results:
			all = append(all, r)
		case total = <-fed:
		case <-ctx.Done():
			t.Fatalf("%d requests answered within the test's deadline", len(all))
		}
		if len(all) == stopAfter && stoppedAt.IsZero() {
			began := time.Now()
			victim.Shutdown()
			victim.WaitForShutdown()
			stoppedAt = time.Now()
			close(stopped)
			t.Logf("%s stopped in %v with %d requests answered", victim.Name(), stoppedAt.Sub(began).Round(time.Millisecond), len(all))
		}
	}

	var refused, completedAfter int
	served := make([]int, len(b.queens))      // jobs each queen completed
	servedAfter := make([]int, len(b.queens)) // ... that it accepted after the stop
	workers := map[string]int{}
	var slowest time.Duration
	var slow clusterReq
	for _, res := range all {
		r := res.req
		for _, a := range res.attempts[:len(res.attempts)-1] {
			refused++
			if (a.status != http.StatusTooManyRequests && a.status != http.StatusServiceUnavailable) || a.code == "" {
				t.Errorf("%s was refused with status %d and code %q, want 429 or 503 with a code", r, a.status, a.code)
			}
		}
		a := res.last()
		switch {
		case a.err != nil && a.jobID != "":
			t.Errorf("%s: job %s was accepted and did not complete: %v", r, a.jobID, a.err)
			continue
		case a.err != nil:
			t.Errorf("%s: %v", r, a.err)
			continue
		case a.status != http.StatusOK:
			t.Errorf("%s: job %q answered %d %s", r, a.jobID, a.status, a.code)
			continue
		case a.text != r.want:
			t.Errorf("%s: job %s wrote %q, want the engine's %q", r, a.jobID, a.text, r.want)
			continue
		}
		if d := a.ended.Sub(a.began); d > slowest {
			slowest, slow = d, r
		}
		served[r.queen]++
		workers[a.worker]++
		if a.began.After(stoppedAt) {
			completedAfter++
			servedAfter[r.queen]++
		}
	}
	t.Logf("%d requests: %d attempts refused; completed per queen %v, of them after the stop %v; per worker %v; slowest %v (%s)",
		len(all), refused, served, servedAfter, workers, slowest.Round(time.Millisecond), slow)
	if completedAfter < afterStop {
		t.Errorf("%d jobs accepted after the stop completed, want %d", completedAfter, afterStop)
	}
	for i, n := range servedAfter {
		if n < afterStop/4 {
			t.Errorf("queen %d (on %s) completed %d jobs it accepted after %s stopped, want %d at least",
				i, b.servers[b.queens[i].on].Name(), n, victim.Name(), afterStop/4)
		}
	}

	// New leaders on the survivors, every process connected to one, and
	// nothing left on the work queue.
	poll(t, 30*time.Second, func() error {
		for _, g := range b.groups() {
			led := false
			for i := range b.servers {
				led = led || i != target && b.leads(i, g)
			}
			if !led {
				return fmt.Errorf("no survivor leads %s", g)
			}
		}
		for name, want := range map[string]int{"rbee-queen": len(b.queens), "rbee-worker": len(b.workers)} {
			if n := len(b.conns(t, name)); n != want {
				return fmt.Errorf("%d %s connections on the survivors, want %d", n, name, want)
			}
		}
		return nil
	})
	poll(t, 30*time.Second, func() error {
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		defer qcancel()
		cons, err := b.js.Consumer(qctx, b.subj.JobsStream(), b.subj.JobsConsumer(clusterModel))
		if err != nil {
			return err
		}
		info, err := cons.Info(qctx)
		if err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("%d jobs queued and %d unacknowledged", info.NumPending, info.NumAckPending)
		}
		return nil
	})

	for _, p := range slices.Concat(b.queens, b.workers) {
		stop(t, p.cmd, syscall.SIGTERM)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("the test ran past its deadline")
	}
}
