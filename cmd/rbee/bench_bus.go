package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/infer/sample"
	"github.com/rbee-dev/rbee/schemas"
)

// What the bus costs a job, measured on an `rbee up` of its own that serves
// one small model with many slots: the time it adds to a 1-token job's
// first token over the engine alone, beside a raw NATS round trip on the
// same server, and how many 1-token jobs a second it carries for many
// clients at once.

// busPrompt is the short prompt of every 1-token job.
const busPrompt = "Once upon a time"

// busJobTimeout bounds one job; it is also the job's timeout on the bus,
// so that a job lost there does not outlive the run.
const busJobTimeout = 30 * time.Second

// engineSettle outlasts the engine threads' polling after a generation
// (infer's spinTime, 1 ms).
const engineSettle = 3 * time.Millisecond

// busResult is the bus section of the report.
type busResult struct {
	Model        benchModel `json:"model"`
	Up           upOptions  `json:"up"` // the `rbee up` flags these figures ran under
	StartSeconds float64    `json:"start_seconds"`
	StopSeconds  float64    `json:"stop_seconds"`
	WorkerPIDs   []int      `json:"worker_pids"`
	Prompt       string     `json:"prompt"`
	PromptTokens int        `json:"prompt_tokens"` // BOS included
	// The first token of a 1-token job, one job at a time, the three ways
	// taking turns: through rbee up over HTTP (a streaming /v1/completions
	// request to its first SSE event), through the queen's NATS endpoint
	// (the request to the first event message), and the engine alone in
	// this process (a one-sequence Session, from the Generate call to the
	// first token). Both engines keep the prompt in their prefix caches
	// after the first run.
	HTTPTTFT   latency `json:"http_ttft"`
	NATSTTFT   latency `json:"nats_ttft"`
	EngineTTFT latency `json:"engine_ttft"`
	// NATSSplit is where a NATS job's first token time went, from the
	// timings its end event carries.
	NATSSplit ttftSplit `json:"nats_split"`
	// BusOverheadP50ms is HTTPTTFT.P50ms - EngineTTFT.P50ms: what HTTP,
	// the queen, JetStream and the worker add.
	BusOverheadP50ms float64 `json:"bus_overhead_p50_ms"`
	// NATSRTT is a raw request/reply round trip on rbee up's server, to a
	// responder in this process on a private subject: the floor of any
	// message exchange on it.
	NATSRTT latency `json:"nats_rtt"`
	// Jobs are the sustained runs: many clients each sending 1-token jobs
	// one after another, through the queen's NATS micro endpoint, then
	// through HTTP.
	Jobs []jobsRun `json:"jobs"`
}

// ttftSplit divides the first token of the 1-token jobs sent through NATS
// (p50s of each part, so they need not add up exactly), by the timings of
// their end events: Queued from the queen's admitting the job (after the
// request was read and checked) to a worker's taking it, which holds the
// publish to the work queue and the delivery; Worker from the worker's
// taking it to its end event, of which Engine is the engine's time to the
// first token; and Rest, what is left of each job's time to its first
// event: the request reaching the queen, its checks, and the events'
// publish to the stream and relay to the requester.
type ttftSplit struct {
	QueuedP50ms float64 `json:"queued_p50_ms"`
	WorkerP50ms float64 `json:"worker_p50_ms"`
	EngineP50ms float64 `json:"engine_p50_ms"`
	RestP50ms   float64 `json:"rest_p50_ms"`
}

// latency summarises samples in milliseconds.
type latency struct {
	N     int       `json:"n"`
	P50ms float64   `json:"p50_ms"`
	P99ms float64   `json:"p99_ms"`
	Minms float64   `json:"min_ms"`
	Ms    []float64 `json:"ms,omitempty"` // every sample, where they are few
}

func newLatency(ms []float64, keep bool) latency {
	l := latency{N: len(ms), P50ms: percentile(ms, 0.50), P99ms: percentile(ms, 0.99)}
	if len(ms) > 0 {
		l.Minms = slices.Min(ms)
	}
	if keep {
		l.Ms = ms
	}
	return l
}

func durationMs(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// jobsRun is one sustained run of 1-token jobs.
type jobsRun struct {
	Via         string  `json:"via"`    // "nats" or "http"
	Target      string  `json:"target"` // the subject or URL the jobs went to
	Clients     int     `json:"clients"`
	Connections int     `json:"connections"` // NATS connections the clients share; HTTP: keep-alive, one per client
	MaxTokens   int     `json:"max_tokens"`
	SendSeconds float64 `json:"send_seconds"` // clients start jobs for this long
	WallSeconds float64 `json:"wall_seconds"` // to the end of the last job
	Jobs        int     `json:"jobs"`         // that ended with their end event
	Errors      int     `json:"errors"`
	// ErrorSample holds the first few distinct errors.
	ErrorSample   []string `json:"error_sample,omitempty"`
	JobsPerSecond float64  `json:"jobs_per_second"` // Jobs / WallSeconds
	Latency       latency  `json:"latency"`         // request to the job's end, under this load
	CPU           cpuUse   `json:"cpu"`
}

// cpuUse is where the CPU time of a sustained run went, read from /proc
// (zero where there is none).
type cpuUse struct {
	UpSeconds     float64 `json:"up_seconds"`     // rbee up: the queen and the NATS server
	WorkerSeconds float64 `json:"worker_seconds"` // its worker processes
	ClientSeconds float64 `json:"client_seconds"` // this process: the clients
	// MachineBusy is the fraction of all the machine's CPUs that were busy,
	// whatever ran on them, and OtherCores the CPUs' worth of it that none
	// of the processes above used: other load on a shared machine.
	MachineBusy float64 `json:"machine_busy"`
	CPUs        int     `json:"cpus"`
	OtherCores  float64 `json:"other_cores"`
}

// cpuMeter reads the CPU time of the processes a run involves.
type cpuMeter struct {
	up      int
	workers []int
}

type cpuSample struct {
	up, workers, self float64
	busy, total       uint64 // /proc/stat ticks of all CPUs
	cpus              int
}

// userHZ is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const userHZ = 100

func (m cpuMeter) sample() cpuSample {
	s := cpuSample{up: procCPUSeconds(m.up), self: procCPUSeconds(os.Getpid())}
	for _, pid := range m.workers {
		s.workers += procCPUSeconds(pid)
	}
	s.busy, s.total, s.cpus = machineTicks()
	return s
}

func (m cpuMeter) since(a cpuSample) cpuUse {
	b := m.sample()
	u := cpuUse{UpSeconds: b.up - a.up, WorkerSeconds: b.workers - a.workers, ClientSeconds: b.self - a.self, CPUs: b.cpus}
	if b.total > a.total && b.cpus > 0 {
		u.MachineBusy = float64(b.busy-a.busy) / float64(b.total-a.total)
		// /proc/stat counts every CPU's ticks: its total is wall time times CPUs.
		wall := float64(b.total-a.total) / userHZ / float64(u.CPUs)
		if wall > 0 {
			u.OtherCores = max(0, u.MachineBusy*float64(u.CPUs)-(u.UpSeconds+u.WorkerSeconds+u.ClientSeconds)/wall)
		}
	}
	return u
}

// procCPUSeconds is the user and system time of a process so far.
func procCPUSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command's closing parenthesis, from the
	// state (field 3): utime and stime are fields 14 and 15.
	rest := string(data[bytes.LastIndexByte(data, ')')+1:])
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return float64(ut+st) / userHZ
}

// machineTicks reads /proc/stat: the busy ticks of all CPUs together (all
// but idle and iowait; steal counts as busy), all their ticks, and how
// many CPUs there are.
func machineTicks() (busy, total uint64, cpus int) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0, 0
	}
	for l := range strings.Lines(string(data)) {
		if strings.HasPrefix(l, "cpu") && len(l) > 3 && l[3] >= '0' && l[3] <= '9' {
			cpus++
		}
	}
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, cpus
}

// tally collects a sustained run's jobs from its clients.
type tally struct {
	mu     sync.Mutex
	jobs   int
	errors int
	sample []string
	ms     []float64
}

func (t *tally) record(d time.Duration, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.errors++
		if s := err.Error(); len(t.sample) < 5 && !slices.Contains(t.sample, s) {
			t.sample = append(t.sample, s)
		}
		return
	}
	t.jobs++
	t.ms = append(t.ms, durationMs(d))
}

func (t *tally) result(r jobsRun, wall time.Duration, cpu cpuUse) jobsRun {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.WallSeconds, r.CPU = wall.Seconds(), cpu
	r.Jobs, r.Errors, r.ErrorSample = t.jobs, t.errors, t.sample
	if r.WallSeconds > 0 {
		r.JobsPerSecond = float64(t.jobs) / r.WallSeconds
	}
	r.Latency = newLatency(t.ms, false)
	return r
}

// measureBus starts `rbee up` serving bm with cfg.BusSlots slots and
// measures the bus's cost on it; it stops it and checks that its workers
// are gone, whatever happened.
func measureBus(ctx context.Context, bm benchModel, cfg benchConfig, logf func(string, ...any)) (r *busResult, err error) {
	r = &busResult{Model: bm, Prompt: busPrompt,
		Up: upOptions{Slots: cfg.BusSlots, Replicas: cfg.BusReplicas, Ctx: cfg.BusCtx, Threads: cfg.Threads}}
	dir, err := os.MkdirTemp("", "rbee-bench-bus-")
	if err != nil {
		return r, fmt.Errorf("bus: %w", err)
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	up, err := startUpChild(ctx, dir, []benchModel{bm}, r.Up)
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
		if goneErr := waitGone(r.WorkerPIDs); goneErr != nil {
			err = errors.Join(err, goneErr)
		}
	}()
	if r.WorkerPIDs, err = waitReplicas(ctx, up, max(r.Up.Replicas, 1)); err != nil {
		return r, err
	}
	subj, err := schemas.NewSubjects(schemas.DefaultPrefix)
	if err != nil {
		return r, err
	}

	payload, err := busRequestBody(bm.Name)
	if err != nil {
		return r, err
	}
	logf("bus %s: first token through HTTP, through NATS and in the engine alone, %d runs each", bm.Name, cfg.BusRuns)
	if err := measureBusTTFT(ctx, r, up, cfg, payload); err != nil {
		return r, err
	}
	logf("bus: raw NATS request/reply, %d round trips", cfg.BusRTTs)
	if r.NATSRTT, err = natsRoundTrips(ctx, up.natsURL, cfg.BusRTTs, payload); err != nil {
		return r, err
	}

	send := time.Duration(cfg.BusSeconds * float64(time.Second))
	logf("bus %s: %d clients sending 1-token jobs for %v through NATS (rbee up --slots %d --replicas %d)",
		bm.Name, cfg.BusClients, send, r.Up.Slots, r.Up.Replicas)
	meter := cpuMeter{up: up.cmd.Process.Pid, workers: r.WorkerPIDs}
	run, err := natsJobs(ctx, meter, up.natsURL, subj.Infer(), payload, cfg.BusClients, send)
	r.Jobs = append(r.Jobs, run)
	if err != nil {
		return r, err
	}
	logf("bus %s: %d clients sending 1-token jobs for %v through HTTP", bm.Name, cfg.BusClients, send)
	run, err = httpJobs(ctx, meter, "http://"+up.httpAddr+"/v1/completions", bm.Name, cfg.BusClients, send)
	r.Jobs = append(r.Jobs, run)
	return r, err
}

// waitReplicas waits until every replica of the one model is ready (the
// banner waits for the first) and returns their PIDs.
func waitReplicas(ctx context.Context, up *upChild, want int) ([]int, error) {
	deadline := time.Now().Add(upReadyTimeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		workers, err := up.readyWorkers(ctx)
		var pids []int
		for _, w := range workers {
			pids = append(pids, w.PID)
		}
		switch {
		case err == nil && len(pids) == want:
			return pids, nil
		case time.Now().After(deadline):
			return pids, errors.Join(err, fmt.Errorf("bus: %d ready workers within %v, want %d", len(pids), upReadyTimeout, want))
		}
		select {
		case <-ctx.Done():
			return pids, ctx.Err()
		case <-tick.C:
		}
	}
}

// busRequestBody is the InferRequest of a 1-token job.
func busRequestBody(model string) ([]byte, error) {
	zero := 0.0
	req := schemas.InferRequest{Model: model, Prompt: busPrompt, MaxTokens: 1,
		Sampling: schemas.Sampling{Temperature: &zero}, Timeout: busJobTimeout.Seconds()}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(req)
}

// measureBusTTFT times 1-token jobs one at a time through HTTP and
// through the queen's NATS endpoint, and the same generation on the engine
// alone, in turns, so that all three see the machine as it is at the
// moment.
func measureBusTTFT(ctx context.Context, r *busResult, up *upChild, cfg benchConfig, body []byte) error {
	m, err := infer.Load(r.Model.Path, infer.Options{Threads: cfg.Threads})
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	defer m.Close()
	ids, err := m.Tokenizer().Encode(busPrompt, true, false)
	if err != nil {
		return fmt.Errorf("bus: tokenize %q: %w", busPrompt, err)
	}
	r.PromptTokens = len(ids)
	s, err := m.NewSession(cfg.BusCtx)
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	engine := func() (time.Duration, error) {
		var first time.Duration
		start := time.Now()
		_, err := s.Generate(ctx, infer.Request{Prompt: busPrompt, MaxTokens: 1, Sampling: sample.Params{Temperature: 0}},
			func(infer.Token) error {
				if first == 0 {
					first = time.Since(start)
				}
				return nil
			})
		if err == nil && first == 0 {
			err = errors.New("no token")
		}
		return first, err
	}

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	url := "http://" + up.httpAddr + "/v1/completions"
	viaHTTP := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, busJobTimeout)
		defer cancel()
		ttft, tokens, _, err := streamCompletion(ctx, client, url, r.Model.Name, busPrompt, 1)
		if err == nil && tokens != 1 {
			err = fmt.Errorf("%d completion tokens, want 1", tokens)
		}
		return ttft, err
	}

	nc, err := nats.Connect(up.natsURL, nats.Name("rbee-bench-ttft"))
	if err != nil {
		return fmt.Errorf("bus: connect to %s: %w", up.natsURL, err)
	}
	defer nc.Close()
	subj, err := schemas.NewSubjects(schemas.DefaultPrefix)
	if err != nil {
		return err
	}
	var sub *nats.Subscription
	var msgs chan *nats.Msg
	var lastTimings schemas.Timings // the last NATS job's
	viaNATS := func() (time.Duration, error) {
		if sub == nil { // at first, and after a failed job, whose late messages must not be read
			msgs = make(chan *nats.Msg, 64)
			ns, err := nc.ChanSubscribe(nc.NewInbox(), msgs)
			if err != nil {
				return 0, err
			}
			sub = ns
		}
		ttft, timings, err := natsJob(ctx, nc, subj.Infer(), sub.Subject, body, msgs)
		if err == nil && timings == nil {
			err = errors.New("the end event has no timings")
		}
		if err != nil {
			_ = sub.Unsubscribe()
			sub = nil
			return ttft, err
		}
		lastTimings = *timings
		return ttft, nil
	}

	const warmUp = 5
	var httpMs, natsMs, engineMs []float64
	var queued, worker, engineInWorker, rest []float64 // the NATS jobs' split
	for i := range warmUp + cfg.BusRuns {
		h, err := viaHTTP()
		if err != nil {
			return fmt.Errorf("bus: 1-token HTTP stream %d: %w", i, err)
		}
		n, err := viaNATS()
		if err != nil {
			return fmt.Errorf("bus: 1-token NATS job %d: %w", i, err)
		}
		e, err := engine()
		if err != nil {
			return fmt.Errorf("bus: engine run %d: %w", i, err)
		}
		// This engine's idle threads poll for up to a millisecond before
		// they sleep: not into the next job's time.
		time.Sleep(engineSettle)
		if i >= warmUp {
			httpMs, natsMs, engineMs = append(httpMs, durationMs(h)), append(natsMs, durationMs(n)), append(engineMs, durationMs(e))
			t := lastTimings
			queued, worker, engineInWorker = append(queued, t.QueueMillis), append(worker, t.TotalMillis), append(engineInWorker, t.TimeToFirstMillis)
			rest = append(rest, durationMs(n)-t.QueueMillis-t.TotalMillis)
		}
	}
	r.HTTPTTFT, r.NATSTTFT, r.EngineTTFT = newLatency(httpMs, true), newLatency(natsMs, true), newLatency(engineMs, true)
	r.BusOverheadP50ms = r.HTTPTTFT.P50ms - r.EngineTTFT.P50ms
	r.NATSSplit = ttftSplit{QueuedP50ms: newLatency(queued, false).P50ms, WorkerP50ms: newLatency(worker, false).P50ms,
		EngineP50ms: newLatency(engineInWorker, false).P50ms, RestP50ms: newLatency(rest, false).P50ms}
	return nil
}

// natsRoundTrips times n request/reply round trips, one at a time, between
// two connections to the server at url: a responder that echoes on a
// private subject, and a requester.
func natsRoundTrips(ctx context.Context, url string, n int, payload []byte) (latency, error) {
	echo, err := nats.Connect(url, nats.Name("rbee-bench-echo"))
	if err != nil {
		return latency{}, fmt.Errorf("bus: connect to %s: %w", url, err)
	}
	defer echo.Close()
	req, err := nats.Connect(url, nats.Name("rbee-bench-rtt"))
	if err != nil {
		return latency{}, fmt.Errorf("bus: connect to %s: %w", url, err)
	}
	defer req.Close()
	subject := echo.NewInbox()
	if _, err := echo.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond(m.Data) }); err != nil {
		return latency{}, fmt.Errorf("bus: echo responder: %w", err)
	}
	if err := echo.Flush(); err != nil {
		return latency{}, fmt.Errorf("bus: echo responder: %w", err)
	}
	const warmUp = 20
	ms := make([]float64, 0, n)
	for i := range warmUp + n {
		if err := ctx.Err(); err != nil {
			return latency{}, err
		}
		start := time.Now()
		if _, err := req.Request(subject, payload, 5*time.Second); err != nil {
			return latency{}, fmt.Errorf("bus: echo request %d: %w", i, err)
		}
		if i >= warmUp {
			ms = append(ms, durationMs(time.Since(start)))
		}
	}
	return newLatency(ms, false), nil
}

// sustain runs clients at once, each calling job one call after another,
// starting calls for d; it returns how long it took until every client
// was done, and the CPU time meter's processes used meanwhile. job gets
// its client's number.
func sustain(ctx context.Context, clients int, d time.Duration, meter cpuMeter, t *tally, job func(ctx context.Context, client int) error) (time.Duration, cpuUse) {
	var wg sync.WaitGroup
	begin := make(chan struct{})
	var stopAt time.Time
	for c := range clients {
		wg.Go(func() {
			<-begin
			for time.Now().Before(stopAt) && ctx.Err() == nil {
				start := time.Now()
				err := job(ctx, c)
				if ctx.Err() != nil {
					return // the run was stopped: not the job's fault
				}
				t.record(time.Since(start), err)
			}
		})
	}
	cpu0 := meter.sample()
	start := time.Now()
	stopAt = start.Add(d)
	close(begin)
	wg.Wait()
	return time.Since(start), meter.since(cpu0)
}

// natsJobs sends 1-token jobs the way `rbee run` does: a request on the
// queen's infer subject with a reply inbox, then events one a message and
// an empty message. Each client keeps its inbox from job to job, and takes
// a new one after a failed job, whose late messages it must not read.
func natsJobs(parent context.Context, meter cpuMeter, url, subject string, body []byte, clients int, d time.Duration) (jobsRun, error) {
	const clientsPerConn = 16
	r := jobsRun{Via: "nats", Target: subject, Clients: clients, Connections: (clients + clientsPerConn - 1) / clientsPerConn,
		MaxTokens: 1, SendSeconds: d.Seconds()}
	conns := make([]*nats.Conn, r.Connections)
	for i := range conns {
		nc, err := nats.Connect(url, nats.Name("rbee-bench-jobs"))
		if err != nil {
			return r, fmt.Errorf("bus: connect to %s: %w", url, err)
		}
		defer nc.Close()
		conns[i] = nc
	}
	type inbox struct {
		sub  *nats.Subscription
		msgs chan *nats.Msg
	}
	inboxes := make([]inbox, clients)
	subscribe := func(c int) error {
		if old := inboxes[c].sub; old != nil {
			_ = old.Unsubscribe()
		}
		nc := conns[c/clientsPerConn]
		msgs := make(chan *nats.Msg, 64)
		sub, err := nc.ChanSubscribe(nc.NewInbox(), msgs)
		if err != nil {
			inboxes[c] = inbox{}
			return err
		}
		inboxes[c] = inbox{sub: sub, msgs: msgs}
		return nil
	}
	for c := range clients {
		if err := subscribe(c); err != nil {
			return r, fmt.Errorf("bus: subscribe: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(parent, d+2*busJobTimeout)
	defer cancel()
	var t tally
	wall, cpu := sustain(ctx, clients, d, meter, &t, func(ctx context.Context, c int) error {
		if inboxes[c].sub == nil { // its last subscribe failed
			if err := subscribe(c); err != nil {
				return err
			}
		}
		in := inboxes[c]
		_, _, err := natsJob(ctx, conns[c/clientsPerConn], subject, in.sub.Subject, body, in.msgs)
		if err != nil {
			if serr := subscribe(c); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		return err
	})
	for _, in := range inboxes {
		if in.sub != nil {
			_ = in.sub.Unsubscribe()
		}
	}
	r = t.result(r, wall, cpu)
	if err := parent.Err(); err != nil {
		return r, err
	}
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("bus: NATS jobs still running %v after the clients stopped sending: %w", 2*busJobTimeout, err)
	}
	return r, nil
}

// natsJob sends one job and reads its events until the empty message,
// checking that they come in order and end with the end event. It returns
// the time to the first event and the end event's timings.
func natsJob(ctx context.Context, nc *nats.Conn, subject, inbox string, body []byte, msgs <-chan *nats.Msg) (time.Duration, *schemas.Timings, error) {
	start := time.Now()
	if err := nc.PublishRequest(subject, inbox, body); err != nil {
		return 0, nil, err
	}
	timer := time.NewTimer(busJobTimeout)
	defer timer.Stop()
	var first time.Duration
	var timings *schemas.Timings
	next, ended := 0, false
	for {
		select {
		case <-ctx.Done():
			return first, nil, ctx.Err()
		case <-timer.C:
			return first, nil, fmt.Errorf("the job did not end within %v", busJobTimeout)
		case m := <-msgs:
			if first == 0 {
				first = time.Since(start)
			}
			if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
				return first, nil, fmt.Errorf("service error %s: %s", code, m.Header.Get("Nats-Service-Error"))
			}
			if len(m.Data) == 0 {
				if !ended {
					return first, nil, errors.New("the stream closed before the end event")
				}
				return first, timings, nil
			}
			var ev schemas.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				return first, nil, fmt.Errorf("bad event: %w", err)
			}
			if ev.Seq != next {
				return first, nil, fmt.Errorf("event %d arrived, expected %d", ev.Seq, next)
			}
			next++
			switch ev.Type {
			case schemas.EventEnd:
				ended, timings = true, ev.Timings
			case schemas.EventError:
				return first, nil, ev.Error
			}
		}
	}
}

// httpJobs sends 1-token jobs as streaming completions, each client on a
// keep-alive connection of its own.
func httpJobs(parent context.Context, meter cpuMeter, url, model string, clients int, d time.Duration) (jobsRun, error) {
	r := jobsRun{Via: "http", Target: url, Clients: clients, Connections: clients, MaxTokens: 1, SendSeconds: d.Seconds()}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(parent, d+2*busJobTimeout)
	defer cancel()
	var t tally
	wall, cpu := sustain(ctx, clients, d, meter, &t, func(ctx context.Context, c int) error {
		ctx, cancel := context.WithTimeout(ctx, busJobTimeout)
		defer cancel()
		_, tokens, _, err := streamCompletion(ctx, client, url, model, busPrompt, 1)
		if err == nil && tokens != 1 {
			err = fmt.Errorf("%d completion tokens, want 1", tokens)
		}
		return err
	})
	r = t.result(r, wall, cpu)
	if err := parent.Err(); err != nil {
		return r, err
	}
	if err := ctx.Err(); err != nil {
		return r, fmt.Errorf("bus: HTTP jobs still running %v after the clients stopped sending: %w", 2*busJobTimeout, err)
	}
	return r, nil
}
