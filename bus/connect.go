// Package bus is all of rbee's NATS and JetStream wiring: connecting with
// reconnects, an embedded server, provisioning streams, consumers and the
// workers bucket, and publishing through JetStream leader elections.
package bus

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultURL is where Connect looks for NATS when Config.URL is empty.
const DefaultURL = "nats://127.0.0.1:4222"

// Connection tuning. The client's default ping interval (2 minutes, 2
// outstanding) takes minutes to notice a dead server; these notice in about a
// minute. Backoff bounds keep a fleet that lost its server from retrying in
// lockstep, yet reconnect within seconds once it is back.
const (
	pingInterval   = 20 * time.Second
	maxPingsOut    = 3
	dialTimeout    = 2 * time.Second
	backoffMin     = 100 * time.Millisecond
	backoffMax     = 5 * time.Second
	reconnectFirst = 250 * time.Millisecond
)

// Config is how a component reaches NATS. Env tags are for caarlos0/env/v11
// and use the nats CLI's names; the CLI maps --server to URL.
type Config struct {
	// URL is one or more comma-separated nats:// or tls:// URLs; empty means DefaultURL.
	URL string `env:"NATS_URL"`
	// Creds is a credentials file holding a user JWT and its nkey seed.
	Creds string `env:"NATS_CREDS"`
	// NKey is an nkey seed file: alone it authenticates with the nkey; with
	// Creds it is the seed that signs for a Creds file holding only the JWT.
	NKey     string `env:"NATS_NKEY"`
	User     string `env:"NATS_USER"`
	Password string `env:"NATS_PASSWORD"`
	Token    string `env:"NATS_TOKEN"`
	// TLSCert and TLSKey are a client certificate for mutual TLS; TLSCA
	// verifies the server instead of the system roots.
	TLSCert string `env:"NATS_CERT"`
	TLSKey  string `env:"NATS_KEY"`
	TLSCA   string `env:"NATS_CA"`
	// InboxPrefix replaces _INBOX for this connection's reply subjects: a
	// server that lets each identity subscribe only to its own inboxes
	// (rbee up's, see InboxPrefix) needs it.
	InboxPrefix string `env:"NATS_INBOX_PREFIX"`
	// Name is the client name shown in server monitoring.
	Name string
	// InProcess, when set, connects to that server in this process
	// without a socket (an Embedded's Server): rbee up's queen and hive
	// save the loopback round trips.
	InProcess nats.InProcessConnProvider `env:"-"`
}

// options turns the config into nats options, reading key and certificate
// files now so that a bad file is reported before any dial.
func (cfg Config) options(logger *slog.Logger) (nats.Options, error) {
	o := nats.GetDefaultOptions()
	url := cfg.URL
	if strings.TrimSpace(url) == "" {
		url = DefaultURL
	}
	for u := range strings.SplitSeq(url, ",") {
		if u = strings.TrimSpace(u); u != "" {
			o.Servers = append(o.Servers, u)
		}
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return o, errors.New("nats tls: set both the certificate and the key, or neither")
	}
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.Timeout(dialTimeout),
		nats.MaxReconnects(-1),
		// Without this the client gives up for good after two authorization
		// errors in a row, e.g. while a server reloads its accounts.
		nats.IgnoreAuthErrorAbort(),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			return backoff(attempts-1, reconnectFirst, backoffMax) // attempts counts from 1
		}),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
	}
	opts = append(opts, handlers(logger)...)
	switch {
	case cfg.Creds != "" && cfg.NKey != "":
		opts = append(opts, nats.UserCredentials(cfg.Creds, cfg.NKey))
	case cfg.Creds != "":
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	case cfg.NKey != "":
		opt, err := nats.NkeyOptionFromSeed(cfg.NKey)
		if err != nil {
			return o, fmt.Errorf("nats nkey %s: %w", cfg.NKey, err)
		}
		opts = append(opts, opt)
	}
	if cfg.User != "" || cfg.Password != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if cfg.TLSCert != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, fmt.Errorf("nats options: %w", err)
		}
	}
	return o, nil
}

func handlers(logger *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats disconnected", "url", nc.ConnectedUrlRedacted(), "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			logger.Info("nats reconnected", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			logger.Debug("nats reconnect attempt failed", "err", err)
		}),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				logger.Warn("nats connection closed", "err", err)
				return
			}
			logger.Info("nats connection closed")
		}),
		nats.LameDuckModeHandler(func(nc *nats.Conn) {
			logger.Warn("nats server entering lame duck mode; will move to another", "server", nc.ConnectedServerName())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub == nil {
				logger.Error("nats async error", "err", err)
				return
			}
			msgs, bytes, _ := sub.Pending()
			dropped, _ := sub.Dropped()
			logger.Error("nats subscription error", "subject", sub.Subject, "err", err,
				"pending_msgs", msgs, "pending_bytes", bytes, "dropped", dropped)
		}),
	}
}

// Connect dials NATS. If no server answers yet it retries, with bounded
// backoff and jitter, until one does or ctx is done, so components can start
// in any order. Errors no retry can fix (authorization, TLS verification,
// missing files) are returned at once. Once connected, the connection
// reconnects forever and logs disconnects, reconnects and asynchronous
// errors (slow consumers included) through logger; ctx no longer matters.
// A nil logger discards.
func Connect(ctx context.Context, cfg Config, logger *slog.Logger) (*nats.Conn, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o, err := cfg.options(logger)
	if err != nil {
		return nil, err
	}
	d := &dialer{Dialer: net.Dialer{Timeout: dialTimeout}, initial: ctx}
	o.CustomDialer = d
	o.InProcessServer = cfg.InProcess
	servers := strings.Join(o.Servers, ",")
	for attempt := 0; ; attempt++ {
		nc, err := o.Connect()
		if err == nil {
			d.connected.Store(true)
			logger.Info("nats connected", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
			return nc, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect to nats %s: %w (last error: %v)", servers, context.Cause(ctx), err)
		}
		if permanent(err) {
			return nil, fmt.Errorf("connect to nats %s: %w", servers, err)
		}
		wait := backoff(attempt, backoffMin, backoffMax)
		logger.Warn("nats not reachable; retrying", "servers", servers, "attempt", attempt+1, "retry_in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("connect to nats %s: %w (last error: %v)", servers, context.Cause(ctx), err)
		case <-t.C:
		}
	}
}

// dialer lets ctx cancel a dial in progress during the initial connect, and
// only then: reconnects must not die with the caller's context.
type dialer struct {
	net.Dialer
	initial   context.Context
	connected atomic.Bool
}

func (d *dialer) Dial(network, address string) (net.Conn, error) {
	ctx := d.initial
	if d.connected.Load() {
		ctx = context.Background()
	}
	return d.DialContext(ctx, network, address)
}

// permanent reports whether a connect error is one that retrying cannot fix.
func permanent(err error) bool {
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		verifyFail *tls.CertificateVerificationError
	)
	return errors.Is(err, nats.ErrAuthorization) ||
		errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.Is(err, nats.ErrSecureConnWanted) ||
		errors.Is(err, nats.ErrSecureConnRequired) ||
		errors.Is(err, fs.ErrNotExist) ||
		errors.Is(err, fs.ErrPermission) ||
		errors.As(err, &unknownCA) ||
		errors.As(err, &hostname) ||
		errors.As(err, &invalid) ||
		errors.As(err, &verifyFail)
}

// backoff is the wait before retry n (from 0): doubling from lo, capped at
// hi, less up to a third at random so that clients that lost the same
// server do not come back in lockstep.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := min(lo<<min(max(n, 0), 20), hi)
	return d - rand.N(d/3+1)
}
