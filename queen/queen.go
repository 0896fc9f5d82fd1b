// Package queen is rbee's orchestrator: an OpenAI-compatible HTTP ingress and
// a NATS micro service. It admits jobs, queues them on the JetStream work
// queue and relays the events a worker publishes on the job's subject in
// the events stream.
package queen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/schemas"
)

// Defaults for the zero values of Config.
const (
	DefaultHTTPAddr          = "127.0.0.1:8080"
	DefaultFirstTokenTimeout = 5 * time.Minute
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxTokens         = 256
	// DefaultMaxChoices bounds a request's n: each choice is a sequence
	// in a worker's batch.
	DefaultMaxChoices = 4
	// DefaultShutdownGrace outlasts a worker's drain (30 s), so a stream
	// whose worker finishes in time ends normally.
	DefaultShutdownGrace = 35 * time.Second
	DefaultTimeout       = 10 * time.Minute
	// DefaultKeepAliveTimeout is Go's HTTP client's idle connection
	// timeout: a pooled client closes first, as it expects.
	DefaultKeepAliveTimeout = 90 * time.Second
	// DefaultWorkerStaleAfter is the workers bucket's default TTL: a
	// heartbeat that old has expired whether or not its marker was seen.
	DefaultWorkerStaleAfter = 15 * time.Second
)

// ServiceName and ServiceVersion identify the micro service (nats micro ls).
const (
	ServiceName    = "rbee-queen"
	ServiceVersion = "0.1.0"
)

// Config configures a Queen. Zero values take the defaults above.
type Config struct {
	HTTPAddr string // e.g. "127.0.0.1:8080"; port 0 picks a free one (see Addr)
	Subjects schemas.Subjects
	// ID names the queen (schemas.ValidID); its jobs' events go to
	// subjects under it. Default: "queen-" and random letters. Two queens
	// must not share one.
	ID string
	// DefaultTimeout bounds a job, queueing included, when the request
	// gives no deadline or timeout.
	DefaultTimeout time.Duration
	// WorkerStaleAfter is how old a worker's heartbeat may be for the
	// worker to count as live, even before its key expires.
	WorkerStaleAfter time.Duration
	// Provisioning sizes the streams and buckets the queen keeps: Run
	// provisions them, and makes again what the bus loses.
	Provisioning bus.Provisioning
	// FirstTokenTimeout bounds the wait for a job's first event, queueing
	// included.
	FirstTokenTimeout time.Duration
	// IdleTimeout bounds the gap between two events once streaming.
	IdleTimeout time.Duration
	// DefaultMaxTokens applies when a request sets no max_tokens.
	DefaultMaxTokens int
	// MaxChoices is the largest n a request may ask for (1 to
	// schemas.MaxChoices).
	MaxChoices int
	// ShutdownGrace is how long Run lets in-flight HTTP streams finish
	// after its context is done; then they are cancelled.
	ShutdownGrace time.Duration
	// KeepAliveTimeout closes an idle HTTP keep-alive connection, which
	// would otherwise hold a goroutine, buffers and a file descriptor for
	// as long as its client lives.
	KeepAliveTimeout time.Duration
	// CheckResponseFormat, when set, tells whether workers can honour a
	// request's response format, so that a schema they would refuse is a
	// 400 before the job is queued (cmd/rbee sets worker.CheckResponseFormat).
	CheckResponseFormat func(*schemas.ResponseFormat) error
	// Keys are the API keys HTTP requests must bring (Authorization:
	// Bearer, or X-Api-Key), except /healthz, /readyz and, with
	// MetricsOpen, /metrics. The caller reloads them (SIGHUP). Nil: no
	// keys, which New allows only on a loopback address or with
	// AllowNoAuth.
	Keys        *apikey.Set
	AllowNoAuth bool
	MetricsOpen bool
}

func (c *Config) setDefaults() error {
	if c.HTTPAddr == "" {
		c.HTTPAddr = DefaultHTTPAddr
	}
	if _, err := schemas.NewSubjects(c.Subjects.Prefix); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"first token timeout", &c.FirstTokenTimeout, DefaultFirstTokenTimeout},
		{"idle timeout", &c.IdleTimeout, DefaultIdleTimeout},
		{"shutdown grace", &c.ShutdownGrace, DefaultShutdownGrace},
		{"default timeout", &c.DefaultTimeout, DefaultTimeout},
		{"worker stale after", &c.WorkerStaleAfter, DefaultWorkerStaleAfter},
		{"keep-alive timeout", &c.KeepAliveTimeout, DefaultKeepAliveTimeout},
	} {
		switch {
		case *d.v < 0:
			return fmt.Errorf("%s %v is negative", d.name, *d.v)
		case *d.v == 0:
			*d.v = d.def
		}
	}
	if err := c.CheckAuth(); err != nil {
		return err
	}
	if c.ID == "" {
		c.ID = "queen-" + newJobID()[:10]
	}
	switch {
	case !schemas.ValidID(c.ID):
		return fmt.Errorf("queen ID %q: want 1-128 letters, digits, '-' or '_'", c.ID)
	case c.DefaultMaxTokens < 0 || c.DefaultMaxTokens > schemas.MaxTokensLimit:
		return fmt.Errorf("default max tokens %d: want 0 to %d", c.DefaultMaxTokens, schemas.MaxTokensLimit)
	case c.MaxChoices < 0 || c.MaxChoices > schemas.MaxChoices:
		return fmt.Errorf("max choices %d: want 0 to %d", c.MaxChoices, schemas.MaxChoices)
	case c.DefaultMaxTokens == 0:
		c.DefaultMaxTokens = DefaultMaxTokens
	}
	if c.MaxChoices == 0 {
		c.MaxChoices = DefaultMaxChoices
	}
	return nil
}

// Queen admits inference requests from HTTP and NATS and relays their
// token streams. Create it with New; serve it with Run, or mount Handler on
// a server of your own.
type Queen struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	cfg Config
	// liveCfg is cfg with what ApplyConfig changed; read it with live.
	liveCfg atomic.Pointer[Config]
	log     *slog.Logger
	metrics *metrics
	handler http.Handler
	started time.Time

	now func() time.Time // the clock, replaced in tests

	inflight   tracker
	router     *eventRouter
	registry   *registry
	keeper     *keeper
	requesters *requesters
	hiveModels hiveModels
	auditor    *bus.Auditor

	running atomic.Bool
	addr    atomic.Value // string
	ready   chan struct{}
}

// New makes a Queen that uses nc. reg receives the queen's metrics and must
// also be a prometheus.Gatherer (a *prometheus.Registry is both) because
// /metrics serves what it gathers; nil means a registry of the queen's own.
// A nil logger discards logs.
func New(nc *nats.Conn, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Queen, error) {
	if nc == nil {
		return nil, errors.New("queen: nil NATS connection")
	}
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("queen config: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	gatherer, ok := reg.(prometheus.Gatherer)
	if !ok {
		return nil, fmt.Errorf("queen: registerer %T is not a prometheus.Gatherer, so /metrics could not serve it", reg)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("queen: jetstream: %w", err)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("queen: metrics: %w", err)
	}
	q := &Queen{
		nc:      nc,
		js:      js,
		cfg:     cfg,
		log:     logger,
		metrics: m,
		started: time.Now(),
		now:     time.Now,
		ready:   make(chan struct{}),
	}
	q.liveCfg.Store(&cfg)
	q.router = newEventRouter(q)
	q.registry = newRegistry(q)
	q.keeper = newKeeper(q)
	q.requesters = newRequesters(nc)
	q.handler = q.routes(gatherer)
	if q.auditor, err = bus.NewAuditor(nc, cfg.Subjects, "queen", cfg.ID, logger); err != nil {
		return nil, fmt.Errorf("queen: %w", err)
	}
	if err := reg.Register(q.auditor.DroppedCounter("queen")); err != nil {
		return nil, fmt.Errorf("queen: metrics: %w", err)
	}
	return q, nil
}

// endStreamsTimeout bounds the wait for streams to write their last event
// once the shutdown grace has run out.
const endStreamsTimeout = 5 * time.Second

// errShuttingDown is the cause of requests' contexts ending when the
// shutdown grace runs out.
var errShuttingDown = schemas.Errorf(schemas.CodeShuttingDown, "the queen is shutting down")

// Close stops reading job events; Run calls it when it returns. Use it
// when serving Handler without Run.
func (q *Queen) Close() {
	q.router.close()
	q.registry.close()
	if err := q.requesters.close(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		q.log.Warn("unsubscribe from the gone subject", "err", err)
	}
}

// ID is the queen's ID, as configured or made up by New.
func (q *Queen) ID() string { return q.cfg.ID }

// live is the config in force: cfg with the settings ApplyConfig changed.
func (q *Queen) live() *Config { return q.liveCfg.Load() }

// ApplyConfig applies the settings of cfg that can change while the queen
// runs: the default, first-token and idle timeouts, the default max tokens
// and the provisioning (queue limits, ages), which it applies to the
// streams now. The others need a restart and are ignored. On an error
// nothing changes.
func (q *Queen) ApplyConfig(ctx context.Context, cfg Config) error {
	cur := q.live()
	next := *cur
	next.DefaultTimeout, next.FirstTokenTimeout, next.IdleTimeout = cfg.DefaultTimeout, cfg.FirstTokenTimeout, cfg.IdleTimeout
	next.DefaultMaxTokens, next.Provisioning = cfg.DefaultMaxTokens, cfg.Provisioning
	if err := next.setDefaults(); err != nil {
		return fmt.Errorf("queen config: %w", err)
	}
	if next.Provisioning != cur.Provisioning {
		if err := bus.Provision(ctx, q.js, next.Subjects, next.Provisioning); err != nil {
			return fmt.Errorf("queen: provision: %w", err)
		}
	}
	q.liveCfg.Store(&next)
	return nil
}

// Audit records a security-relevant event in the queen's chain of the
// audit trail (published while Run runs): cmd/rbee records key reloads.
func (q *Queen) Audit(ev schemas.AuditEvent) { q.auditor.Record(ev) }

// Handler is the queen's HTTP API: the OpenAI-compatible endpoints,
// /healthz, /readyz and /metrics.
func (q *Queen) Handler() http.Handler { return q.handler }

// Addr is the address Run listens on, or "" before it listens. With port 0
// in Config.HTTPAddr it tells which port was picked.
func (q *Queen) Addr() string {
	s, _ := q.addr.Load().(string)
	return s
}

// Ready is closed once Run listens for HTTP and the micro service is up.
// It stays open when Run fails before that.
func (q *Queen) Ready() <-chan struct{} { return q.ready }

// Run serves HTTP on Config.HTTPAddr and the micro service on the bus until
// ctx is done, then shuts both down: no new requests are taken, in-flight
// HTTP streams get Config.ShutdownGrace to finish and are cancelled after
// it (their workers are told to stop). Run returns once every request
// handler has returned. It returns the listener's error when the port is
// taken, and may be called once.
func (q *Queen) Run(ctx context.Context) error {
	if !q.running.CompareAndSwap(false, true) {
		return errors.New("queen: Run called twice")
	}
	ln, err := net.Listen("tcp", q.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("queen: listen on %s: %w", q.cfg.HTTPAddr, err)
	}
	// Requests outlive ctx by the grace period: their context is cancelled
	// by hardStop, not by ctx, with a cause that makes streams end with an
	// error event rather than a cut connection.
	hardCtx, hardStop := context.WithCancelCause(context.WithoutCancel(ctx))
	defer hardStop(nil)

	var keeping sync.WaitGroup
	keepCtx, stopKeeping := context.WithCancel(hardCtx)
	keeping.Go(func() { q.keeper.run(keepCtx) })
	// The auditor outlives the requests, so their events are published.
	keeping.Go(func() { q.auditor.Run(keepCtx) })
	defer func() {
		stopKeeping()
		keeping.Wait()
	}()
	if err := q.requesters.start(q.nc); err != nil {
		ln.Close()
		return err
	}
	svc, err := q.startService(hardCtx)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           q.handler,
		BaseContext:       func(net.Listener) context.Context { return hardCtx },
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       q.cfg.KeepAliveTimeout,
		ErrorLog:          slog.NewLogLogger(q.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	q.addr.Store(ln.Addr().String())
	close(q.ready)
	q.log.Info("queen listening", "http", ln.Addr().String(), "infer_subject", q.cfg.Subjects.Infer())

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
		served <- serveErr
	}

	if err := svc.Stop(); err != nil {
		q.log.Warn("stop micro service", "err", err)
	}
	graceCtx, cancel := context.WithTimeout(context.Background(), q.cfg.ShutdownGrace)
	defer cancel()
	if err := srv.Shutdown(graceCtx); err != nil {
		q.log.Warn("shutdown grace expired: cancelling in-flight requests", "grace", q.cfg.ShutdownGrace)
		hardStop(errShuttingDown)
		// Streams end now with an error event and their end; let them
		// write it before the connections close.
		if !q.inflight.waitFor(endStreamsTimeout) {
			q.log.Warn("requests still running after their streams were ended", "waited", endStreamsTimeout)
		}
		srv.Close()
	}
	<-served
	q.inflight.closeAndWait()
	q.Close()
	q.log.Info("queen stopped")
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
		return fmt.Errorf("queen: serve http: %w", serveErr)
	}
	return nil
}

// startService adds the micro service with its infer endpoint.
func (q *Queen) startService(ctx context.Context) (micro.Service, error) {
	svc, err := micro.AddService(q.nc, micro.Config{
		Name:        ServiceName,
		Version:     ServiceVersion,
		Description: "rbee orchestrator: queues inference jobs",
	})
	if err != nil {
		return nil, fmt.Errorf("queen: add micro service: %w", err)
	}
	err = svc.AddEndpoint("infer", micro.ContextHandler(ctx, q.handleInfer),
		micro.WithEndpointSubject(q.cfg.Subjects.Infer()))
	if err != nil {
		if stopErr := svc.Stop(); stopErr != nil {
			q.log.Warn("stop micro service", "err", stopErr)
		}
		return nil, fmt.Errorf("queen: add infer endpoint on %s: %w", q.cfg.Subjects.Infer(), err)
	}
	return svc, nil
}

// tracker counts running request handlers so that Run can wait for them,
// and refuses new ones once shutdown has begun.
type tracker struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

func (t *tracker) add() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

func (t *tracker) done() { t.wg.Done() }

// waitFor waits for the running handlers, at most d; it reports whether
// they all returned.
func (t *tracker) waitFor(d time.Duration) bool {
	all := make(chan struct{})
	go func() {
		t.wg.Wait()
		close(all)
	}()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-all:
		return true
	case <-timer.C:
		return false
	}
}

func (t *tracker) closeAndWait() {
	t.mu.Lock()
	t.closed = true
	t.mu.Unlock()
	t.wg.Wait()
}
