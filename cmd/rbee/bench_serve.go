package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/schemas"
)

// Deadlines for the `rbee up` child: to its banner, to its exit after
// SIGINT, and for its workers to be gone after that.
const (
	upReadyTimeout = 2 * time.Minute
	upStopTimeout  = time.Minute
	upGoneTimeout  = 15 * time.Second
)

// serveLevel is one model under N concurrent streaming clients.
type serveLevel struct {
	Model            string    `json:"model"`
	Clients          int       `json:"clients"`
	Requests         int       `json:"requests"`
	CompletionTokens int       `json:"completion_tokens"`
	WallSeconds      float64   `json:"wall_seconds"`
	TokensPerSecond  float64   `json:"aggregate_tokens_per_second"`
	TTFTms           []float64 `json:"ttft_ms"`
	TTFTp50ms        float64   `json:"ttft_p50_ms"`
	TTFTp99ms        float64   `json:"ttft_p99_ms"`
	// Every streamed text equals what the engine writes for its prompt
	// alone; Mismatches counts those that do not.
	MatchSolo  bool `json:"match_solo"`
	Mismatches int  `json:"mismatches"`
	texts      map[string]string
}

type serveResult struct {
	Models       []benchModel   `json:"models"`
	Slots        int            `json:"slots"`
	Ctx          int            `json:"ctx"`
	Threads      int            `json:"threads"`
	MaxTokens    int            `json:"max_tokens"`
	StartSeconds float64        `json:"start_seconds"` // rbee up to its ready banner
	StopSeconds  float64        `json:"stop_seconds"`  // SIGINT to exit
	WorkerPIDs   map[string]int `json:"worker_pids"`   // by model
	// WorkerRSSBytes is each model's worker resident memory after its
	// levels, beside the model file it maps.
	WorkerRSSBytes map[string]int64 `json:"worker_rss_bytes"`
	ModelBytes     map[string]int64 `json:"model_bytes"`
	Levels         []serveLevel     `json:"levels"`
}

// measureServe starts `rbee up` (this binary) serving models, runs each
// level of concurrent streaming clients against /v1/completions for each
// model, and stops it with SIGINT, checking that its workers are gone.
func measureServe(ctx context.Context, models []benchModel, cfg benchConfig, logf func(string, ...any)) (r *serveResult, err error) {
	r = &serveResult{Models: models, Slots: cfg.ServeSlots, Ctx: cfg.ServeCtx, Threads: cfg.Threads, MaxTokens: cfg.ServeTokens,
		WorkerRSSBytes: map[string]int64{}, ModelBytes: map[string]int64{}}
	dir, err := os.MkdirTemp("", "rbee-bench-up-")
	if err != nil {
		return r, fmt.Errorf("serve: %w", err)
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	up, err := startUpChild(ctx, dir, models, upOptions{Slots: cfg.ServeSlots, Replicas: 1, Ctx: cfg.ServeCtx, Threads: cfg.Threads})
	if err != nil {
		return r, err
	}
	r.StartSeconds = time.Since(t0).Seconds()
	defer func() {
		t := time.Now()
		if stopErr := up.stop(); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
		r.StopSeconds = time.Since(t).Seconds()
		if goneErr := waitGone(slices.Collect(maps.Values(r.WorkerPIDs))); goneErr != nil {
			err = errors.Join(err, goneErr)
		}
	}()
	if r.WorkerPIDs, err = up.workerPIDs(ctx, len(models)); err != nil {
		return r, err
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	url := "http://" + up.httpAddr + "/v1/completions"
	for _, m := range models {
		// One request first, so that no level pays for a cold start.
		if _, _, _, err := streamCompletion(ctx, client, url, m.Name, "Once upon a time", cfg.ServeTokens); err != nil {
			return r, fmt.Errorf("serve %s: warm-up: %w", m.Name, err)
		}
		solo, err := newSoloTexts(m.Path, cfg.Threads, cfg.ServeCtx, cfg.ServeTokens)
		if err != nil {
			return r, fmt.Errorf("serve %s: %w", m.Name, err)
		}
		for _, n := range cfg.Clients {
			logf("serve %s: %d client(s)", m.Name, n)
			lv, err := runClients(ctx, client, url, m.Name, n, cfg.Requests, cfg.ServeTokens)
			if err == nil {
				err = solo.check(ctx, &lv)
			}
			if err != nil {
				solo.close()
				return r, fmt.Errorf("serve %s, %d clients: %w", m.Name, n, err)
			}
			r.Levels = append(r.Levels, lv)
		}
		solo.close()
		if pid, ok := r.WorkerPIDs[m.Name]; ok {
			r.WorkerRSSBytes[m.Name] = residentMemory(pid)
		}
		if fi, err := os.Stat(m.Path); err == nil {
			r.ModelBytes[m.Name] = fi.Size()
		}
	}
	return r, nil
}

// soloTexts generates, in this process, what the engine writes for a
// prompt alone: the oracle for every text a batch of clients got.
type soloTexts struct {
	m         *infer.Model
	s         *infer.Session
	maxTokens int
	memo      map[string]string
}

func newSoloTexts(path string, threads, ctxLen, maxTokens int) (*soloTexts, error) {
	m, err := infer.Load(path, infer.Options{Threads: threads})
	if err != nil {
		return nil, err
	}
	s, err := m.NewSession(ctxLen)
	if err != nil {
		m.Close()
		return nil, err
	}
	return &soloTexts{m: m, s: s, maxTokens: maxTokens, memo: map[string]string{}}, nil
}

func (o *soloTexts) close() { o.m.Close() }

func (o *soloTexts) check(ctx context.Context, lv *serveLevel) error {
	lv.MatchSolo = true
	for prompt, got := range lv.texts {
		want, ok := o.memo[prompt]
		if !ok {
			res, err := o.s.Generate(ctx, infer.Request{Prompt: prompt, MaxTokens: o.maxTokens,
				Sampling: sample.Params{Temperature: 0}}, func(infer.Token) error { return nil })
			if err != nil {
				return fmt.Errorf("solo run of %q: %w", prompt, err)
			}
			want = res.Text
			o.memo[prompt] = want
		}
		if got != want {
			lv.MatchSolo = false
			lv.Mismatches++
		}
	}
	return nil
}

// residentMemory reads a process's resident set from /proc; 0 where there
// is none.
func residentMemory(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// runClients has n clients stream requests (requests in all, at least one
// each) one after another, all clients at once.
func runClients(ctx context.Context, client *http.Client, url, model string, n, requests, maxTokens int) (serveLevel, error) {
	per := max(1, requests/n)
	lv := serveLevel{Model: model, Clients: n, Requests: n * per, texts: map[string]string{}}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	prompts := benchPrompts(8)
	begin := make(chan struct{})
	for c := range n {
		wg.Go(func() {
			<-begin
			for i := range per {
				prompt := fmt.Sprintf("%s, said client %d in round %d.", prompts[(c+i)%len(prompts)], c, i)
				ttft, tokens, text, err := streamCompletion(ctx, client, url, model, prompt, maxTokens)
				mu.Lock()
				lv.texts[prompt] = text
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("client %d request %d: %w", c, i, err)
					cancel()
				}
				lv.CompletionTokens += tokens
				lv.TTFTms = append(lv.TTFTms, float64(ttft.Microseconds())/1000)
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	start := time.Now()
	close(begin)
	wg.Wait()
	if firstErr != nil {
		return lv, firstErr
	}
	lv.WallSeconds = time.Since(start).Seconds()
	lv.TokensPerSecond = float64(lv.CompletionTokens) / lv.WallSeconds
	lv.TTFTp50ms, lv.TTFTp99ms = percentile(lv.TTFTms, 0.50), percentile(lv.TTFTms, 0.99)
	return lv, nil
}

// percentile is the nearest-rank p-quantile of xs.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	i := int(math.Ceil(float64(len(s))*p)) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// streamCompletion sends one streaming completion and returns the time to
// its first event, the completion tokens the usage chunk reports and the
// text.
func streamCompletion(ctx context.Context, client *http.Client, url, model, prompt string, maxTokens int) (ttft time.Duration, tokens int, text string, err error) {
	body, err := json.Marshal(map[string]any{
		"model": model, "prompt": prompt, "max_tokens": maxTokens, "temperature": 0,
		"stream": true, "stream_options": map[string]bool{"include_usage": true},
	})
	if err != nil {
		return 0, 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, "", err
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return 0, 0, "", fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var out strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	chunks, usage := 0, -1
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if ttft == 0 {
			ttft = time.Since(start)
		}
		if data == "[DONE]" {
			if usage < 0 {
				usage = chunks
			}
			return ttft, usage, out.String(), nil
		}
		var ev struct {
			Choices []struct {
				Text string `json:"text"`
			} `json:"choices"`
			Usage *schemas.Usage `json:"usage"`
			Error *schemas.Error `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			return ttft, 0, "", fmt.Errorf("event %q: %w", data, err)
		}
		if ev.Error != nil {
			return ttft, 0, "", ev.Error
		}
		if ev.Usage != nil {
			usage = ev.Usage.CompletionTokens
		}
		for _, c := range ev.Choices {
			if c.Text != "" {
				chunks++
				out.WriteString(c.Text)
			}
		}
	}
	return ttft, 0, "", fmt.Errorf("stream ended without [DONE] (%v)", sc.Err())
}

// upChild is a running `rbee up` started by the benchmark.
type upChild struct {
	cmd      *exec.Cmd
	httpAddr string
	natsURL  string
	stdout   *watchWriter
	stderr   *watchWriter
	exited   chan struct{}
	waitErr  error
	stopOnce sync.Once
	stopErr  error
}

// upOptions are the `rbee up` flags a benchmark chooses.
type upOptions struct {
	Slots    int `json:"slots"`
	Replicas int `json:"replicas"`
	Ctx      int `json:"ctx"`
	Threads  int `json:"threads"`
}

// startUpChild starts `rbee up` serving models in dir and waits for its
// banner. Its workers log at warn, as it does.
func startUpChild(ctx context.Context, dir string, models []benchModel, o upOptions) (*upChild, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("serve: find the rbee binary: %w", err)
	}
	httpAddr, err := freeLocalAddr()
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	args := []string{"up", "--http", httpAddr, "--nats-port", "-1", "--data-dir", dir + "/nats",
		"--cache-dir", dir + "/cache", "--prefix", schemas.DefaultPrefix, "--log-level", "warn",
		"--slots", strconv.Itoa(o.Slots), "--replicas", strconv.Itoa(max(o.Replicas, 1)),
		"--ctx", strconv.Itoa(o.Ctx), "--threads", strconv.Itoa(o.Threads),
		// The bench's own clients connect without identities; the server
		// checks no permissions, which the figures therefore leave out.
		"--nats-auth=false"}
	for _, m := range models {
		args = append(args, "--serve", m.Name+"="+m.Path)
	}
	u := &upChild{
		cmd: exec.Command(exe, args...), httpAddr: httpAddr, exited: make(chan struct{}),
		stdout: newWatchWriter("Ctrl-C"), stderr: newWatchWriter(""),
	}
	u.cmd.Stdout, u.cmd.Stderr = u.stdout, u.stderr
	// --log-level reaches only rbee up's own logger; its workers read the
	// environment.
	u.cmd.Env = append(os.Environ(), "RBEE_LOG_LEVEL=warn")
	if err := u.cmd.Start(); err != nil {
		return nil, fmt.Errorf("serve: start rbee up: %w", err)
	}
	go func() {
		u.waitErr = u.cmd.Wait()
		close(u.exited)
	}()
	deadline := time.NewTimer(upReadyTimeout)
	defer deadline.Stop()
	select {
	case <-u.stdout.seen:
	case <-u.exited:
		return nil, fmt.Errorf("serve: rbee up exited before it was ready (%v): %s", u.waitErr, u.stderr.tail())
	case <-ctx.Done():
		return nil, errors.Join(ctx.Err(), u.stop())
	case <-deadline.C:
		return nil, errors.Join(fmt.Errorf("serve: rbee up was not ready within %v: %s", upReadyTimeout, u.stderr.tail()), u.stop())
	}
	banner := u.stdout.text()
	u.natsURL = regexp.MustCompile(`nats://[0-9.]+:[0-9]+`).FindString(banner)
	if !strings.Contains(banner, "http://"+httpAddr+"/v1") || u.natsURL == "" {
		return nil, errors.Join(fmt.Errorf("serve: rbee up's banner names neither the API at %s nor a NATS URL:\n%s", httpAddr, banner), u.stop())
	}
	return u, nil
}

// stop sends SIGINT and waits for the exit, killing the child if it does
// not stop in time. It may be called more than once.
func (u *upChild) stop() error {
	u.stopOnce.Do(func() {
		select {
		case <-u.exited:
		default:
			if err := u.cmd.Process.Signal(os.Interrupt); err != nil && !errors.Is(err, os.ErrProcessDone) {
				u.stopErr = fmt.Errorf("serve: interrupt rbee up: %w", err)
			}
			deadline := time.NewTimer(upStopTimeout)
			defer deadline.Stop()
			select {
			case <-u.exited:
			case <-deadline.C:
				_ = u.cmd.Process.Kill()
				<-u.exited
				u.stopErr = fmt.Errorf("serve: rbee up did not stop within %v of SIGINT and was killed", upStopTimeout)
				return
			}
		}
		if u.waitErr != nil && u.stopErr == nil {
			u.stopErr = fmt.Errorf("serve: rbee up exited with %v: %s", u.waitErr, u.stderr.tail())
		}
	})
	return u.stopErr
}

// workerPIDs asks the bus which worker processes serve the models.
func (u *upChild) workerPIDs(ctx context.Context, want int) (map[string]int, error) {
	workers, err := u.readyWorkers(ctx)
	if err != nil {
		return nil, err
	}
	pids := map[string]int{}
	for _, w := range workers {
		pids[w.Model] = w.PID
	}
	if len(pids) != want {
		return pids, fmt.Errorf("serve: %d ready workers on the bus, want %d", len(pids), want)
	}
	return pids, nil
}

// readyWorkers reads the ready workers, with their PIDs, from the bus.
func (u *upChild) readyWorkers(ctx context.Context) ([]schemas.WorkerHeartbeat, error) {
	nc, err := nats.Connect(u.natsURL, nats.Name("rbee-bench"))
	if err != nil {
		return nil, fmt.Errorf("serve: connect to %s: %w", u.natsURL, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	subj, err := schemas.NewSubjects(schemas.DefaultPrefix)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, subj.WorkersBucket())
	if err != nil {
		return nil, fmt.Errorf("serve: workers bucket: %w", err)
	}
	workers, err := bus.LiveWorkers(ctx, kv, nil)
	if err != nil {
		return nil, fmt.Errorf("serve: live workers: %w", err)
	}
	var ready []schemas.WorkerHeartbeat
	for _, w := range workers {
		if w.State == schemas.WorkerReady && w.PID > 0 {
			ready = append(ready, w)
		}
	}
	return ready, nil
}

// waitGone polls until none of pids is a live process, and kills those
// still there at the deadline.
func waitGone(pids []int) error {
	if len(pids) == 0 {
		return nil
	}
	alive := func() []int {
		var left []int
		for _, pid := range pids {
			if p, err := os.FindProcess(pid); err == nil && p.Signal(syscall.Signal(0)) == nil {
				left = append(left, pid)
			}
		}
		return left
	}
	deadline := time.Now().Add(upGoneTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		left := alive()
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				if p, err := os.FindProcess(pid); err == nil {
					_ = p.Kill()
				}
			}
			return fmt.Errorf("serve: worker processes %v were still running %v after rbee up stopped, and were killed", left, upGoneTimeout)
		}
		<-tick.C
	}
}

func freeLocalAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// watchWriter keeps the first and last bytes a child writes and closes
// seen once the output contains a marker.
type watchWriter struct {
	mu     sync.Mutex
	head   []byte
	last   []byte
	marker string
	seen   chan struct{}
	once   sync.Once
}

const watchKeep = 16 << 10

func newWatchWriter(marker string) *watchWriter {
	return &watchWriter{marker: marker, seen: make(chan struct{})}
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := min(len(p), watchKeep-len(w.head)); n > 0 {
		w.head = append(w.head, p[:n]...)
	}
	w.last = append(w.last, p...)
	if len(w.last) > watchKeep {
		w.last = append(w.last[:0], w.last[len(w.last)-watchKeep:]...)
	}
	if w.marker != "" && bytes.Contains(w.head, []byte(w.marker)) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}

// text is the start of the output.
func (w *watchWriter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(w.head)
}

// tail is the end of the output, for error messages.
func (w *watchWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := strings.TrimSpace(string(w.last))
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}
