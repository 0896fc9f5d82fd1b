package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/bus/bustest"
	"github.com/rbee-dev/rbee/schemas"
)

// The load tests run a real queen and two real workers of the bundled
// stories260K on an embedded JetStream server, send many concurrent
// clients at once, and check that every one of them ends properly (a
// completion, or 429 queue_full with Retry-After), that none hangs past
// its deadline, and what the queen's goroutines and heap do meanwhile and
// afterwards, as the queen's own /metrics tells.

const (
	loadModel = "stories260K"
	// loadMaxTokens keeps each job short, so that the admitted jobs finish
	// on a 2-core machine well within the clients' deadline.
	loadMaxTokens = 12
	// loadClientDeadline is how long a client waits for its answer; one
	// that has neither finished nor been refused by then has hung.
	loadClientDeadline = 60 * time.Second
	// loadSlots is each worker's batch.
	loadSlots = 8
	// loadSettle bounds the wait, after the last client, for the queen's
	// goroutines and heap to come back to where they were.
	loadSettle = 30 * time.Second
	// loadGoroutineMargin is how many goroutines more than before the load
	// the queen may keep after it: timers and the runtime's own come and go.
	loadGoroutineMargin = 10
	// loadHeapMargin is how much more live heap than before the load the
	// queen may hold after it: maps that grew with the requests in flight
	// (the HTTP server's connections, the relays by job ID) keep their
	// size, and buffers that grew once stay.
	loadHeapMargin = 4 << 20
	// loadHeapPerGoroutineKept is what the queen's live heap may keep, on
	// top of loadHeapMargin, for each goroutine that ran at the peak: the Go
	// runtime keeps the descriptor of every goroutine that ended to reuse
	// it, never freeing it (490 bytes each measured with Go 1.26; a heap
	// profile of the queen after 3,000 requests shows nothing else left).
	loadHeapPerGoroutineKept = 1 << 10
	// loadGoroutinesPerRequest bounds the queen's goroutines per request in
	// flight: the HTTP server's one per connection, and the one that
	// watches a connection for the client going away while its handler
	// runs. The queen itself starts none per request (2.0 measured).
	loadGoroutinesPerRequest = 3
)

// loadBed is a queen and two workers on an embedded JetStream server.
type loadBed struct {
	js      jetstream.JetStream
	subj    schemas.Subjects
	base    string
	queen   *exec.Cmd
	workers []*exec.Cmd
	// scrape reads /metrics on a connection of its own, kept open, so that
	// it adds the same one connection to every measurement.
	scrape *http.Client
}

func newLoadBed(t *testing.T, queenFlags ...string) *loadBed {
	t.Helper()
	srv := bustest.RunServer(t)
	_, js := bustest.Connect(t, srv)
	subj, _ := schemas.NewSubjects("")
	httpAddr := freeAddr(t)
	b := &loadBed{
		js:     js,
		subj:   subj,
		base:   "http://" + httpAddr,
		scrape: &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}, Timeout: 10 * time.Second},
	}
	t.Cleanup(b.scrape.CloseIdleConnections)
	// The queen logs every refusal at warn: thousands of lines here.
	b.queen = start(t, append([]string{"queen", "--server", srv.ClientURL(), "--http", httpAddr, "--log-level", "error"},
		queenFlags...)...)
	for _, id := range []string{"load-1", "load-2"} {
		b.workers = append(b.workers, start(t, "worker", "--server", srv.ClientURL(), "--model-name", loadModel,
			"--model", modelPath, "--worker-id", id, "--slots", strconv.Itoa(loadSlots), "--ctx", "128", "--threads", "1"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	poll(t, 60*time.Second, func() error {
		ws, err := liveWorkers(ctx, js, subj)
		if err != nil || len(ws) != 2 {
			return fmt.Errorf("%d ready workers (%v), want 2", len(ws), err)
		}
		resp, err := b.scrape.Get(b.base + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz %d", resp.StatusCode)
		}
		return nil
	})
	// The queen starts following job events and workers with its first
	// request: warm it up so the baseline holds them.
	warm := &http.Client{Transport: &http.Transport{}}
	defer warm.CloseIdleConnections()
	for i := range 4 {
		if o := loadRequest(ctx, warm, b.base, i, i%2 == 0); o.kind != loadCompleted {
			t.Fatalf("warm-up request %d: %s", i, o.detail)
		}
	}
	return b
}

// stop stops the workers and the queen, checking that each exits cleanly.
func (b *loadBed) stop(t *testing.T) {
	t.Helper()
	for _, w := range b.workers {
		stop(t, w, syscall.SIGTERM)
	}
	stop(t, b.queen, syscall.SIGTERM)
}

// jobsDelivered is how many jobs the model's workers have been handed.
func (b *loadBed) jobsDelivered(t *testing.T) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := b.js.Consumer(ctx, b.subj.JobsStream(), b.subj.JobsConsumer(loadModel))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.Delivered.Consumer
}

// drained waits until the model's work queue is empty and the workers
// hold no job unacknowledged, and checks that they were handed exactly
// the admitted jobs since before (delivered then), each once: a job
// refused with 429 was never queued, and no admitted one was lost,
// left behind or taken over after its worker's lease ran out.
func (b *loadBed) drained(t *testing.T, before uint64, admitted int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), loadSettle)
	defer cancel()
	var info *jetstream.ConsumerInfo
	poll(t, loadSettle, func() error {
		cons, err := b.js.Consumer(ctx, b.subj.JobsStream(), b.subj.JobsConsumer(loadModel))
		if err != nil {
			return err
		}
		if info, err = cons.Info(ctx); err != nil {
			return err
		}
		if info.NumPending != 0 || info.NumAckPending != 0 {
			return fmt.Errorf("%d jobs queued and %d unacknowledged after every client has finished", info.NumPending, info.NumAckPending)
		}
		return nil
	})
	if n := info.Delivered.Consumer - before; n != uint64(admitted) || info.NumRedelivered != 0 {
		t.Errorf("the workers were handed %d jobs (%d redelivered) for %d admitted, want each admitted job once",
			n, info.NumRedelivered, admitted)
	}
}

// procMemory reads a memory figure of a process from /proc (VmRSS, the
// resident set, or VmHWM, its peak, which catches what sampling /metrics
// may miss) in bytes; 0 without /proc.
func procMemory(pid int, field string) float64 {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb * (1 << 10)
		}
	}
	return 0
}

// workersResident describes the workers' resident sets, which the tests
// only report: a worker serves no /metrics.
func (b *loadBed) workersResident() string {
	var parts []string
	for _, w := range b.workers {
		parts = append(parts, fmt.Sprintf("%.1f MiB (peak %.1f MiB)",
			procMemory(w.Process.Pid, "VmRSS")/(1<<20), procMemory(w.Process.Pid, "VmHWM")/(1<<20)))
	}
	return strings.Join(parts, ", ")
}

// queenStats are the figures of the queen's /metrics the tests watch.
type queenStats struct {
	goroutines float64 // go_goroutines
	heapAlloc  float64 // go_memstats_heap_alloc_bytes: live objects and garbage not yet swept
	heapInuse  float64 // go_memstats_heap_inuse_bytes: spans holding objects
	rss        float64 // process_resident_memory_bytes
	gcs        float64 // go_gc_duration_seconds_count: garbage collections so far
	jobs       float64 // rbee_queen_jobs_in_flight: HTTP jobs queued or streaming
}

var queenMetrics = []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes",
	"process_resident_memory_bytes", "go_gc_duration_seconds_count", "rbee_queen_jobs_in_flight"}

func (s queenStats) String() string {
	return fmt.Sprintf("%.0f goroutines, heap alloc %.1f MiB, heap in use %.1f MiB, resident %.1f MiB, %.0f jobs in flight",
		s.goroutines, s.heapAlloc/(1<<20), s.heapInuse/(1<<20), s.rss/(1<<20), s.jobs)
}

// stats reads the queen's /metrics.
func (b *loadBed) stats() (queenStats, error) {
	resp, err := b.scrape.Get(b.base + "/metrics")
	if err != nil {
		return queenStats{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return queenStats{}, fmt.Errorf("/metrics: status %d", resp.StatusCode)
	}
	got := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || !slices.Contains(queenMetrics, name) {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return queenStats{}, fmt.Errorf("/metrics: %s %q: %v", name, value, err)
		}
		got[name] = v
	}
	if err := sc.Err(); err != nil {
		return queenStats{}, fmt.Errorf("/metrics: %v", err)
	}
	for _, name := range queenMetrics {
		if _, ok := got[name]; !ok {
			return queenStats{}, fmt.Errorf("/metrics has no %s", name)
		}
	}
	return queenStats{goroutines: got["go_goroutines"], heapAlloc: got["go_memstats_heap_alloc_bytes"],
		heapInuse: got["go_memstats_heap_inuse_bytes"], rss: got["process_resident_memory_bytes"],
		gcs: got["go_gc_duration_seconds_count"], jobs: got["rbee_queen_jobs_in_flight"]}, nil
}

func (b *loadBed) mustStats(t *testing.T) queenStats {
	t.Helper()
	s, err := b.stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// loadPeaks polls the queen's /metrics until stopped and keeps the largest
// figures seen.
type loadPeaks struct {
	stopc   chan struct{}
	done    chan struct{}
	max     queenStats
	samples int
	errs    []error
}

func (b *loadBed) watchPeaks(every time.Duration) *loadPeaks {
	p := &loadPeaks{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			if s, err := b.stats(); err != nil {
				p.errs = append(p.errs, err)
			} else {
				p.samples++
				p.max.goroutines = max(p.max.goroutines, s.goroutines)
				p.max.heapAlloc = max(p.max.heapAlloc, s.heapAlloc)
				p.max.heapInuse = max(p.max.heapInuse, s.heapInuse)
				p.max.rss = max(p.max.rss, s.rss)
				p.max.jobs = max(p.max.jobs, s.jobs)
			}
			select {
			case <-p.stopc:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// stop ends the polling and returns the peaks.
func (p *loadPeaks) stop(t *testing.T) queenStats {
	t.Helper()
	close(p.stopc)
	<-p.done
	if p.samples == 0 {
		t.Fatalf("no /metrics sample during the load: %v", p.errs)
	}
	if len(p.errs) > 0 {
		t.Logf("%d of %d /metrics samples failed during the load, the first: %v", len(p.errs), len(p.errs)+p.samples, p.errs[0])
	}
	return p.max
}

// live polls the queen's /metrics through two garbage collections and
// returns the sample with the least heap after the first: what was live
// then, once the sweep had freed the garbage. (A sample right after a
// collection may still count garbage not yet swept, one later what was
// allocated since.) The scrapes themselves allocate (the metrics are
// encoded and gzipped), and so bring the collections on.
func (b *loadBed) live(t *testing.T) queenStats {
	t.Helper()
	first := b.mustStats(t)
	least := queenStats{heapAlloc: math.Inf(1)}
	poll(t, loadSettle, func() error {
		s, err := b.stats()
		if err != nil {
			return err
		}
		if s.gcs > first.gcs && s.heapAlloc < least.heapAlloc {
			least = s
		}
		if s.gcs < first.gcs+2 {
			return fmt.Errorf("%.0f garbage collections, waiting for 2: %s", s.gcs-first.gcs, s)
		}
		return nil
	})
	return least
}

// settle waits until the queen has come back to base: goroutines within
// loadGoroutineMargin and, from the second garbage collection since the
// load ended on (the second empties what sync.Pools kept through the
// first), a live heap, measured as live does, within loadHeapMargin and
// what the runtime keeps of the goroutines that ran at the peak.
func (b *loadBed) settle(t *testing.T, base, peak queenStats) (queenStats, time.Duration) {
	t.Helper()
	heapMargin := loadHeapMargin + peak.goroutines*loadHeapPerGoroutineKept
	began := time.Now()
	gcsAtEnd := b.mustStats(t).gcs
	least := queenStats{heapAlloc: math.Inf(1)}
	poll(t, loadSettle, func() error {
		s, err := b.stats()
		if err != nil {
			return err
		}
		if s.gcs >= gcsAtEnd+2 && s.heapAlloc < least.heapAlloc {
			least = s
		}
		switch {
		case s.jobs != 0:
			return fmt.Errorf("the queen follows %.0f jobs after every client has finished: %s", s.jobs, s)
		case s.goroutines > base.goroutines+loadGoroutineMargin:
			return fmt.Errorf("the queen runs %.0f goroutines, %.0f before the load: %s", s.goroutines, base.goroutines, s)
		case s.gcs < gcsAtEnd+2:
			return fmt.Errorf("%.0f garbage collections since the load ended, waiting for 2: %s", s.gcs-gcsAtEnd, s)
		case least.heapAlloc > base.heapAlloc+heapMargin:
			return fmt.Errorf("the queen's live heap is %.1f MiB, %.1f MiB before the load, more than %.1f MiB more: %s",
				least.heapAlloc/(1<<20), base.heapAlloc/(1<<20), heapMargin/(1<<20), least)
		}
		least.goroutines = s.goroutines
		return nil
	})
	return least, time.Since(began)
}

type loadKind int

const (
	loadCompleted loadKind = iota
	loadRefused            // 429 queue_full with Retry-After
	loadFailed
)

type loadOutcome struct {
	kind   loadKind
	took   time.Duration
	detail string // why it failed
	stream bool
	worker string // X-Rbee-Worker-Id
}

// loadRequest sends one completion, streamed or not, and says how it
// ended: completed (a stream with text that ends with [DONE], or a JSON
// answer with text), refused (429 queue_full with a Retry-After of whole
// seconds) or failed (anything else, the client's deadline included).
func loadRequest(ctx context.Context, client *http.Client, base string, i int, stream bool) loadOutcome {
	began := time.Now()
	o := func(k loadKind, format string, args ...any) loadOutcome {
		return loadOutcome{kind: k, took: time.Since(began), stream: stream,
			detail: fmt.Sprintf("client %d (stream %v): ", i, stream) + fmt.Sprintf(format, args...)}
	}
	ctx, cancel := context.WithTimeout(ctx, loadClientDeadline)
	defer cancel()
	body := fmt.Sprintf(`{"model":%q,"prompt":"Once upon a time, girl %d","max_tokens":%d,"temperature":0.8,"stream":%v}`,
		loadModel, i, loadMaxTokens, stream)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/completions", strings.NewReader(body))
	if err != nil {
		return o(loadFailed, "%v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return o(loadFailed, "%v", err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusTooManyRequests:
		var e schemas.ErrorResponse
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error.Code != schemas.CodeQueueFull {
			return o(loadFailed, "429 with %+v (%v), want code %s", e, err, schemas.CodeQueueFull)
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < 1 {
			return o(loadFailed, "429 with Retry-After %q, want whole seconds", resp.Header.Get("Retry-After"))
		}
		return o(loadRefused, "")
	case resp.StatusCode != http.StatusOK:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return o(loadFailed, "status %d: %s", resp.StatusCode, b)
	case stream:
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
			return o(loadFailed, "200 with Content-Type %q", ct)
		}
		text, err := readLoadSSE(resp.Body)
		if err != nil {
			return o(loadFailed, "stream after %q: %v", text, err)
		}
		if text == "" {
			return o(loadFailed, "a stream without text")
		}
	default:
		var answer struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Usage schemas.Usage `json:"usage"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
			return o(loadFailed, "200 with an unreadable answer: %v", err)
		}
		if len(answer.Choices) != 1 || answer.Choices[0].Text == "" || answer.Usage.CompletionTokens < 1 {
			return o(loadFailed, "200 with %+v", answer)
		}
	}
	out := o(loadCompleted, "")
	out.worker = resp.Header.Get("X-Rbee-Worker-Id")
	return out
}

// readLoadSSE reads a completion stream to [DONE] and returns its text; an
// error chunk, a bad chunk or a stream that stops before [DONE] is an
// error.
func readLoadSSE(r io.Reader) (string, error) {
	var text strings.Builder
	sc := bufio.NewScanner(r)
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
				Text string `json:"text"`
			} `json:"choices"`
			Error *schemas.Error `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil {
			return text.String(), fmt.Errorf("chunk %q: %v", data, err)
		}
		if chunk.Error != nil {
			return text.String(), fmt.Errorf("error chunk: %v", chunk.Error)
		}
		for _, c := range chunk.Choices {
			text.WriteString(c.Text)
		}
	}
	if err := sc.Err(); err != nil {
		return text.String(), err
	}
	return text.String(), errors.New("the stream ended without [DONE]")
}

// loadReport counts how n clients' requests ended.
type loadReport struct {
	n                          int
	completed, refused, failed int
	streams                    int
	failures                   []string // the first few
	slowestCompleted           time.Duration
	slowestRefused, wall       time.Duration
	byWorker                   map[string]int
}

func (r loadReport) String() string {
	return fmt.Sprintf("%d clients (%d streaming) in %v: %d completed (slowest %v), %d refused with 429 (slowest %v), %d failed; completed by worker %v",
		r.n, r.streams, r.wall.Round(time.Millisecond), r.completed, r.slowestCompleted.Round(time.Millisecond),
		r.refused, r.slowestRefused.Round(time.Millisecond), r.failed, r.byWorker)
}

// runLoadClients starts n clients at once, on one shared transport, and waits
// for every one of them: each ends by its deadline. stream says which
// clients stream.
func runLoadClients(base string, n int, stream func(i int) bool) loadReport {
	tr := &http.Transport{
		MaxConnsPerHost:     n,
		MaxIdleConns:        n,
		MaxIdleConnsPerHost: n,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	// Idle connections hold a goroutine each in the queen: close them, so
	// that what is measured after the load is the queen's own.
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	outcomes := make([]loadOutcome, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-gate
			outcomes[i] = loadRequest(context.Background(), client, base, i, stream(i))
		})
	}
	began := time.Now()
	close(gate)
	wg.Wait()
	r := loadReport{n: n, wall: time.Since(began), byWorker: map[string]int{}}
	for _, o := range outcomes {
		if o.stream {
			r.streams++
		}
		switch o.kind {
		case loadCompleted:
			r.completed++
			r.slowestCompleted = max(r.slowestCompleted, o.took)
			r.byWorker[o.worker]++
		case loadRefused:
			r.refused++
			r.slowestRefused = max(r.slowestRefused, o.took)
		default:
			r.failed++
			if len(r.failures) < 10 {
				r.failures = append(r.failures, o.detail)
			}
		}
	}
	return r
}

// check fails the test unless every client completed or was refused, and
// at least minCompleted completed.
func (r loadReport) check(t *testing.T, minCompleted int) {
	t.Helper()
	if r.failed > 0 {
		t.Errorf("%d of %d clients neither completed nor got 429 with Retry-After; the first:\n  %s",
			r.failed, r.n, strings.Join(r.failures, "\n  "))
	}
	if r.completed+r.refused+r.failed != r.n {
		t.Errorf("%d outcomes counted for %d clients", r.completed+r.refused+r.failed, r.n)
	}
	if r.completed < minCompleted {
		t.Errorf("%d clients completed, want at least %d", r.completed, minCompleted)
	}
}

// loadStreamQueue is the model's queue bound in TestLoadStreaming: small
// enough that 200 clients arriving together overflow it, so the 429 path
// is taken along with the streaming one.
const loadStreamQueue = 50

// TestLoadStreaming: 200 clients stream at once from two workers of
// stories260K through a queen whose queue holds 50 jobs of the model.
// Each completes or gets 429 with Retry-After, none hangs, and afterwards
// the queen's goroutines and heap come back to where they were.
func TestLoadStreaming(t *testing.T) {
	const clients = 200
	b := newLoadBed(t, "--jobs-max-per-model", strconv.Itoa(loadStreamQueue))
	base := b.live(t)
	delivered := b.jobsDelivered(t)
	t.Logf("queen before: %s; workers resident %s", base, b.workersResident())
	p := b.watchPeaks(20 * time.Millisecond)
	r := runLoadClients(b.base, clients, func(int) bool { return true })
	peak := p.stop(t)
	t.Logf("load: %s", r)
	t.Logf("queen peak: %s", peak)
	// The queue starts empty, so its first loadStreamQueue jobs are
	// admitted whatever happens after.
	r.check(t, loadStreamQueue)
	if peak.goroutines > base.goroutines+clients*loadGoroutinesPerRequest {
		t.Errorf("the queen ran %.0f goroutines under %d clients, %.0f before: more than %d a client",
			peak.goroutines, clients, base.goroutines, loadGoroutinesPerRequest)
	}
	if bound := float64(loadHeapIdle + clients*loadHeapPerRequest); peak.heapInuse > bound {
		t.Errorf("the queen's heap reached %.1f MiB under %d clients, more than the bound of %.1f MiB",
			peak.heapInuse/(1<<20), clients, bound/(1<<20))
	}
	// They arrive within about 100 ms, and the workers take longer than
	// that to finish the first loadStreamQueue jobs.
	if r.refused == 0 {
		t.Errorf("no client was refused: the workers kept the queue under %d jobs, so the 429 path went untested", loadStreamQueue)
	}
	b.drained(t, delivered, r.completed)
	after, took := b.settle(t, base, peak)
	t.Logf("queen after (settled in %v): %s; peak resident (VmHWM) %.1f MiB; workers resident %s",
		took.Round(time.Millisecond), after, procMemory(b.queen.Process.Pid, "VmHWM")/(1<<20), b.workersResident())
	b.stop(t)
}

// The queen's heap under load, and TestLoadConcurrent's 3,000 requests.
const (
	// loadConcurrent is how many requests TestLoadConcurrent sends at once.
	loadConcurrent = 3000
	// loadHeapIdle is the queen's heap with nothing in flight, with room:
	// 4-5 MiB in use measured (the NATS connection, the HTTP server, the
	// metrics), and the runtime lets a heap this small grow to 4 MiB of
	// garbage before it collects.
	loadHeapIdle = 16 << 20
	// loadHeapPerRequest is what one request in flight may cost the queen's
	// heap. A heap profile of the queen with 2,900 connections open shows
	// 34 MiB live, 12 KiB each: 8 KiB is the HTTP server's read and write
	// buffers of the connection (70% of the live heap), the rest its
	// request, headers, contexts and the job's relay; the queen keeps no
	// more per job than that, whatever the job's tokens, and a request
	// refused with 429 keeps only its idle connection. The collector lets
	// garbage grow to as much as is live (GOGC=100), so the heap in use
	// peaks at about twice that: 30-37 KiB a request measured. 48 KiB
	// leaves room for that spread, and still fails a change that keeps as
	// little as 8 KiB more for each request.
	loadHeapPerRequest = 48 << 10
	// loadHeapBound is the heap (go_memstats_heap_inuse_bytes) the queen
	// may use while loadConcurrent requests are in flight: 16 MiB + 3,000 ×
	// 48 KiB, about 157 MiB. The queen's own figure was 91-114 MiB.
	loadHeapBound = loadHeapIdle + loadConcurrent*loadHeapPerRequest
)

// TestLoadConcurrent: 3,000 requests at once, half of them streaming,
// against two workers and the default queue bound (1,000 jobs per model).
// Each completes or gets 429 with Retry-After, the queen's heap stays under
// loadHeapBound throughout, and afterwards its goroutines and heap come
// back to where they were.
func TestLoadConcurrent(t *testing.T) {
	b := newLoadBed(t)
	base := b.live(t)
	delivered := b.jobsDelivered(t)
	t.Logf("queen before: %s; workers resident %s", base, b.workersResident())
	p := b.watchPeaks(20 * time.Millisecond)
	r := runLoadClients(b.base, loadConcurrent, func(i int) bool { return i%2 == 1 })
	peak := p.stop(t)
	t.Logf("load: %s", r)
	t.Logf("queen peak: %s; %.1f KiB of heap and %.2f goroutines per client above the baseline",
		peak, (peak.heapInuse-base.heapInuse)/loadConcurrent/(1<<10), (peak.goroutines-base.goroutines)/loadConcurrent)
	// The queue starts empty, so its first DefaultJobsMaxPerModel jobs are
	// admitted; the requests arrive faster than two workers finish them.
	r.check(t, bus.DefaultJobsMaxPerModel)
	if r.refused == 0 {
		t.Errorf("no client of %d was refused: the 429 path went untested", loadConcurrent)
	}
	if peak.goroutines > base.goroutines+loadConcurrent*loadGoroutinesPerRequest {
		t.Errorf("the queen ran %.0f goroutines under %d requests, %.0f before: more than %d a request",
			peak.goroutines, loadConcurrent, base.goroutines, loadGoroutinesPerRequest)
	}
	if peak.heapInuse > loadHeapBound {
		t.Errorf("the queen's heap reached %.1f MiB under %d requests, more than the bound of %.1f MiB",
			peak.heapInuse/(1<<20), loadConcurrent, float64(loadHeapBound)/(1<<20))
	}
	b.drained(t, delivered, r.completed)
	after, took := b.settle(t, base, peak)
	t.Logf("queen after (settled in %v): %s; peak resident (VmHWM) %.1f MiB; workers resident %s",
		took.Round(time.Millisecond), after, procMemory(b.queen.Process.Pid, "VmHWM")/(1<<20), b.workersResident())
	b.stop(t)
}
