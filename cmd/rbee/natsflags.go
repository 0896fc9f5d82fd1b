package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// natsFlags are the connection flags every NATS-speaking command shares.
// Defaults come from the environment with the nats CLI's variable names
// (NATS_URL, NATS_CREDS, ...), and flags override them.
type natsFlags struct {
	cfg      bus.Config
	prefix   string
	logLevel string
}

func addNATSFlags(fs *flag.FlagSet, clientName string) (*natsFlags, error) {
	n := &natsFlags{}
	if err := env.Parse(&n.cfg); err != nil {
		return nil, fmt.Errorf("environment: %w", err)
	}
	n.cfg.Name = clientName
	prefix := os.Getenv("RBEE_PREFIX")
	if prefix == "" {
		prefix = schemas.DefaultPrefix
	}
	level := os.Getenv("RBEE_LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	fs.StringVar(&n.cfg.URL, "server", n.cfg.URL, "NATS server URLs, comma-separated (env NATS_URL; default "+bus.DefaultURL+")")
	fs.StringVar(&n.cfg.Creds, "creds", n.cfg.Creds, "NATS credentials file (env NATS_CREDS)")
	fs.StringVar(&n.cfg.NKey, "nkey", n.cfg.NKey, "NATS nkey seed file (env NATS_NKEY; default: this command's key from rbee up, in "+defaultNKeysDir()+")")
	fs.StringVar(&n.cfg.InboxPrefix, "inbox-prefix", n.cfg.InboxPrefix, "prefix of this connection's reply subjects (env NATS_INBOX_PREFIX)")
	fs.StringVar(&n.cfg.TLSCA, "tlsca", n.cfg.TLSCA, "CA certificate that verifies the server (env NATS_CA)")
	fs.StringVar(&n.cfg.TLSCert, "tlscert", n.cfg.TLSCert, "client certificate (env NATS_CERT)")
	fs.StringVar(&n.cfg.TLSKey, "tlskey", n.cfg.TLSKey, "client key (env NATS_KEY)")
	fs.StringVar(&n.prefix, "prefix", prefix, "subject prefix (env RBEE_PREFIX)")
	fs.StringVar(&n.logLevel, "log-level", level, "debug, info, warn or error (env RBEE_LOG_LEVEL)")
	return n, nil
}

func (n *natsFlags) subjects() (schemas.Subjects, error) {
	s, err := schemas.NewSubjects(n.prefix)
	if err != nil {
		return s, usageError{err}
	}
	return s, nil
}

// connect dials NATS with the flags' settings.
func (n *natsFlags) connect(ctx context.Context, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	return dial(ctx, withDefaultIdentity(n.cfg, roleOf(n.cfg.Name)), log)
}

// connectChecked dials NATS and waits, up to provisionWait, until the
// streams and buckets exist: workers and hives bind to what the owner of
// provisioning (the queen, rbee up or rbee provision) made, and refuse to
// start with a message naming what is missing.
func (n *natsFlags) connectChecked(ctx context.Context, log *slog.Logger, subj schemas.Subjects) (*nats.Conn, jetstream.JetStream, error) {
	nc, js, err := dial(ctx, withDefaultIdentity(n.cfg, roleOf(n.cfg.Name)), log)
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

func dialProvisioned(ctx context.Context, cfg bus.Config, log *slog.Logger, subj schemas.Subjects) (*nats.Conn, jetstream.JetStream, error) {
	nc, js, err := dial(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	if err := bus.Provision(ctx, js, subj, bus.Provisioning{}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
