package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/bus"
)

// defaultNKeysDir is where rbee up keeps its NATS identities (env
// RBEE_NKEYS_DIR), and where the other commands look for theirs when no
// credentials are given.
func defaultNKeysDir() string {
	if d := os.Getenv("RBEE_NKEYS_DIR"); d != "" {
		return d
	}
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "rbee", "nkeys")
	}
	return ""
}

// roleOf is the identity a command connects as by default: rbee run and
// rbee models are clients, the queen, hive and worker commands are those
// parts, and the rest are an operator's tools.
func roleOf(clientName string) bus.Role {
	switch clientName {
	case "rbee-run", "rbee-models":
		return bus.RoleClient
	case "rbee-queen":
		return bus.RoleQueen
	case "rbee-hive":
		return bus.RoleHive
	case "rbee-worker":
		return bus.RoleWorker
	}
	return bus.RoleOperator
}

// withDefaultIdentity is cfg with the role's key from rbee up's identities
// when cfg names no credentials and that key exists, so that the commands
// run against rbee up as they are written in the README.
func withDefaultIdentity(cfg bus.Config, role bus.Role) bus.Config {
	if cfg.Creds != "" || cfg.NKey != "" || cfg.User != "" || cfg.Token != "" {
		return cfg
	}
	dir := defaultNKeysDir()
	if dir == "" {
		return cfg
	}
	seed := bus.SeedPath(dir, role)
	if _, err := os.Stat(seed); err != nil {
		return cfg
	}
	cfg.NKey = seed
	if cfg.InboxPrefix == "" {
		cfg.InboxPrefix = bus.InboxPrefix(role)
	}
	return cfg
}

// authRequired reads the INFO a NATS server sends first, from the first of
// urls that answers, and reports whether it asks clients to authenticate.
// When none answers it says yes: the connection then fails as it would.
func authRequired(ctx context.Context, urls string) bool {
	if strings.TrimSpace(urls) == "" {
		urls = bus.DefaultURL
	}
	for raw := range strings.SplitSeq(urls, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			continue
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "4222")
		}
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", host)
		cancel()
		if err != nil {
			continue
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReaderSize(conn, 4096).ReadString('\n')
		conn.Close()
		info, ok := strings.CutPrefix(line, "INFO ")
		if err != nil || !ok {
			continue
		}
		var v struct {
			AuthRequired bool `json:"auth_required"`
		}
		if json.Unmarshal([]byte(info), &v) == nil {
			return v.AuthRequired
		}
	}
	return true
}

// natsContext is the part of a nats CLI context file rbee up writes.
type natsContext struct {
	Description string `json:"description"`
	URL         string `json:"url"`
	NKey        string `json:"nkey"`
	InboxPrefix string `json:"inbox_prefix"`
}

// writeNATSContexts writes nats CLI contexts for rbee up's server: "rbee"
// with the client identity and "rbee-operator" with the operator's, so that
// `nats --context rbee req ...` works as the README shows. It returns the
// directory it wrote to.
func writeNATSContexts(url string, ids *bus.Identities) (string, error) {
	base := os.Getenv("XDG_CONFIG_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("nats contexts: %w", err)
		}
		base = filepath.Join(home, ".config")
	}
	dir := filepath.Join(base, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("nats contexts: %w", err)
	}
	for name, role := range map[string]bus.Role{"rbee": bus.RoleClient, "rbee-operator": bus.RoleOperator} {
		data, err := json.MarshalIndent(natsContext{
			Description: "rbee up's embedded server as its " + string(role) + " identity (written by rbee up)",
			URL:         url, NKey: ids.SeedFile(role), InboxPrefix: bus.InboxPrefix(role),
		}, "", "  ")
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".json"), data, 0o600); err != nil {
			return "", fmt.Errorf("nats context %s: %w", name, err)
		}
	}
	return dir, nil
}
