package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/schemas"
)

// natsFlags are the connection flags every NATS-speaking command shares,
// bound to the [nats] and [log] sections of a configuration: its defaults
// come from the file and the environment (the nats CLI's NATS_URL,
// NATS_CREDS, ...), and flags override them.
type natsFlags struct {
	file *config.File
	name string // the client name in server monitoring
	// client commands give up quickly when no server answers, where
	// services wait for one.
	client bool
}

// addNATSFlags adds the connection flags of a client command (rbee run,
// rbee models, the registry commands): the environment sets their defaults.
func addNATSFlags(fs *flag.FlagSet, clientName string) (*natsFlags, error) {
	f := config.Default()
	if err := config.ApplyEnv(&f, os.Environ()); err != nil {
		return nil, err
	}
	n := bindNATSFlags(fs, &f, clientName)
	n.client = true
	return n, nil
}

// bindNATSFlags adds the connection flags, bound to f.
func bindNATSFlags(fs *flag.FlagSet, f *config.File, name string) *natsFlags {
	n := &f.NATS
	fs.StringVar(&n.URL, "server", n.URL, "NATS server URLs, comma-separated (nats.url; env NATS_URL; default "+bus.DefaultURL+")")
	fs.StringVar(&n.Creds, "creds", n.Creds, "NATS credentials file (nats.creds; env NATS_CREDS)")
	fs.StringVar(&n.TLSCA, "tlsca", n.TLSCA, "CA certificate that verifies the server (nats.tls_ca; env NATS_CA)")
	fs.StringVar(&n.TLSCert, "tlscert", n.TLSCert, "client certificate (nats.tls_cert; env NATS_CERT)")
	fs.StringVar(&n.TLSKey, "tlskey", n.TLSKey, "client key (nats.tls_key; env NATS_KEY)")
	fs.StringVar(&n.Prefix, "prefix", n.Prefix, "subject prefix (nats.prefix; env RBEE_PREFIX)")
	fs.StringVar(&f.Log.Level, "log-level", f.Log.Level, "debug, info, warn or error (log.level; env RBEE_LOG_LEVEL)")
	return &natsFlags{file: f, name: name}
}

func (n *natsFlags) subjects() (schemas.Subjects, error) {
	s, err := schemas.NewSubjects(n.file.NATS.Prefix)
	if err != nil {
		return s, usageError{err}
	}
	return s, nil
}

// busConfig is the connection's config; without credentials of its own a
// command connects as its role's identity from rbee up, where one exists.
func (n *natsFlags) busConfig() bus.Config {
	return withDefaultIdentity(n.file.Bus(n.name), roleOf(n.name))
}

// dial connects with busConfig. An rbee up identity it picked by itself is
// left out when the server asks for no authentication: such a server
// refuses nkeys.
func (n *natsFlags) dial(ctx context.Context, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	cfg, own := n.busConfig(), n.file.Bus(n.name)
	if cfg.NKey != own.NKey && !authRequired(ctx, cfg.URL) {
		cfg = own
	}
	return dial(ctx, cfg, log)
}

// clientConnectWait is how long a client command waits for a NATS server
// before it says none answers.
const clientConnectWait = 3 * time.Second

// connect dials NATS with the flags' settings. A client command fails after
// clientConnectWait with one line; a service retries until ctx ends.
func (n *natsFlags) connect(ctx context.Context, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	if !n.client {
		return n.dial(ctx, log)
	}
	cctx, cancel := context.WithTimeoutCause(ctx, clientConnectWait, errNoServer)
	defer cancel()
	nc, js, err := n.dial(cctx, slog.New(slog.DiscardHandler))
	if err != nil && errors.Is(context.Cause(cctx), errNoServer) {
		return nil, nil, fmt.Errorf("no NATS server answers at %s within %v: start one (rbee up), or point --server or NATS_URL at it",
			serverURL(n.file.NATS.URL), clientConnectWait)
	}
	return nc, js, err
}

var errNoServer = errors.New("no NATS server answered")

// connectChecked dials NATS and waits, up to provisionWait, until the
// streams and buckets exist: workers and hives bind to what the owner of
// provisioning (the queen, rbee up or rbee provision) made, and refuse to
// start with a message naming what is missing.
func (n *natsFlags) connectChecked(ctx context.Context, log *slog.Logger, subj schemas.Subjects) (*nats.Conn, jetstream.JetStream, error) {
	nc, js, err := n.dial(ctx, log)
	if err != nil {
		return nil, nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, provisionWait)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err = bus.Check(wctx, js, subj)
		if err == nil {
			return nc, js, nil
		}
		if attempt == 0 {
			log.Warn("waiting for the streams and buckets", "err", err, "wait", provisionWait)
		}
		t := time.NewTimer(time.Second)
		select {
		case <-wctx.Done():
			t.Stop()
			nc.Close()
			return nil, nil, err
		case <-t.C:
		}
	}
}

// provisionWait is how long a worker or hive waits for provisioning.
const provisionWait = 60 * time.Second

func dial(ctx context.Context, cfg bus.Config, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := bus.Connect(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream: %w", err)
	}
	return nc, js, nil
}

func dialProvisioned(ctx context.Context, cfg bus.Config, log *slog.Logger, subj schemas.Subjects, p bus.Provisioning) (*nats.Conn, jetstream.JetStream, error) {
	nc, js, err := dial(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	if err := bus.Provision(ctx, js, subj, p); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
