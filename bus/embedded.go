package bus

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures an in-process nats-server with JetStream.
type EmbeddedConfig struct {
	// Host to listen on; empty means 127.0.0.1, so that a development server
	// is not reachable from other machines unless asked for ("0.0.0.0").
	Host string
	// Port for clients: 0 means 4222, -1 a random free port (see ClientURL).
	Port int
	// DataDir holds JetStream's files; empty means a temporary directory
	// removed by Shutdown.
	DataDir string
	// ServerName names the server in monitoring and clusters.
	ServerName string
	// Logger receives the server's log; nil discards it.
	Logger *slog.Logger
	// Users, when set, are the only identities the server accepts (see
	// Identities.Users): a connection without one of their keys is refused.
	Users []*server.NkeyUser
}

// Embedded is an in-process nats-server with JetStream.
type Embedded struct {
	srv     *server.Server
	tempDir string
}

// StartEmbedded starts a server and waits until it accepts connections, or
// until ctx is done or the server reports that it cannot start.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	e := &Embedded{}
	dir := cfg.DataDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "rbee-nats-")
		if err != nil {
			return nil, fmt.Errorf("embedded nats: data dir: %w", err)
		}
		dir, e.tempDir = tmp, tmp
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	port := cfg.Port
	if port == 0 {
		port = server.DEFAULT_PORT
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dir,
		NoSigs:     true,
		Nkeys:      cfg.Users,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		e.removeTemp()
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	e.srv = srv
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	sl := &serverLogger{log: logger.With("component", "nats-server"), fatal: make(chan string, 1)}
	srv.SetLoggerV2(sl, logger.Enabled(ctx, slog.LevelDebug), false, false)
	srv.Start()
	if err := e.waitReady(ctx, sl.fatal); err != nil {
		e.Shutdown()
		return nil, fmt.Errorf("embedded nats on %s:%d: %w", host, port, err)
	}
	return e, nil
}

// waitReady polls briefly so that both ctx and a fatal start error (a port in
// use, an unusable store directory) end the wait; the server reports those
// only through its logger.
func (e *Embedded) waitReady(ctx context.Context, fatal <-chan string) error {
	for {
		if e.srv.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			return fmt.Errorf("server failed to start: %s", msg)
		case <-ctx.Done():
			return fmt.Errorf("server not ready: %w", context.Cause(ctx))
		default:
		}
	}
}

// ClientURL is the URL clients connect to.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server is the underlying server, for tests and monitoring.
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server, waits until it has stopped, and removes the
// data directory if StartEmbedded made it.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	e.removeTemp()
}

func (e *Embedded) removeTemp() {
	if e.tempDir != "" {
		os.RemoveAll(e.tempDir)
		e.tempDir = ""
	}
}

// serverLogger adapts nats-server's printf logger to slog. Fatal messages
// are logged as errors and also reported on fatal, since an embedded server
// must not exit the process.
type serverLogger struct {
	log   *slog.Logger
	fatal chan string
	once  sync.Once
}

func (l *serverLogger) Noticef(format string, v ...any) { l.log.Info(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.log.Debug(fmt.Sprintf(format, v...)) }

func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg, "fatal", true)
	l.once.Do(func() { l.fatal <- msg })
}
