package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/queen"
	"github.com/rbee-dev/rbee/schemas"
)

var runKeys = subcommands("keys", map[string]command{
	"new": {"generate an API key and its key file (mode 0600); the key is printed once", runKeysNew},
})

func defaultKeysDir() string {
	if d, err := os.UserConfigDir(); err == nil {
		return filepath.Join(d, "rbee", "keys")
	}
	return "keys"
}

func runKeysNew(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("keys new", stderr)
	var (
		dir     = fs.String("dir", defaultKeysDir(), "directory the key file goes to, as NAME.json (made with mode 0700)")
		out     = fs.String("o", "", "key file to write (instead of DIR/NAME.json)")
		models  = fs.String("models", "", "models the key may use, comma-separated (default: every model)")
		expires = fs.String("expires", "", "when the key stops working: an RFC 3339 time, a date (2027-01-31), or a duration from now (720h, 90d)")
		rate    = fs.String("rate", "", "requests the key may make: N/s, N/m or N/h (default: no limit)")
		burst   = fs.Int("burst", 0, "requests at once within the rate (default: N)")
	)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rbee keys new [flags] NAME")
		fs.PrintDefaults()
	}
	name, err := parseWithName(fs, args)
	if err != nil {
		return err
	}
	f := apikey.File{Name: name, Rate: *rate, Burst: *burst}
	if *models != "" {
		f.Models = strings.Split(*models, ",")
	}
	if *expires != "" {
		if f.Expires, err = parseExpiry(*expires, time.Now()); err != nil {
			return usageError{err}
		}
	}
	path := *out
	if path == "" {
		if err := os.MkdirAll(*dir, 0o700); err != nil {
			return err
		}
		path = filepath.Join(*dir, name+".json")
	}
	secret, err := apikey.WriteNew(path, f)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (fingerprint %s); the key is not stored anywhere, keep it now:\n", path, apikey.Fingerprint(secret))
	fmt.Fprintln(stdout, secret)
	return nil
}

// parseWithName parses flags given before or after the one NAME.
func parseWithName(fs *flag.FlagSet, args []string) (string, error) {
	var name string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", err
		}
		return "", usageError{err}
	}
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	if name == "" || len(rest) > 0 {
		return "", usageError{errors.New("keys new: want one NAME")}
	}
	return name, nil
}

// parseExpiry reads an RFC 3339 time, a date (its midnight UTC), or a
// duration from now, with d for days.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n > 0 {
			return now.AddDate(0, 0, n).UTC().Truncate(time.Second), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(d).UTC().Truncate(time.Second), nil
	}
	return time.Time{}, fmt.Errorf("expires %q: want an RFC 3339 time, a date (2027-01-31) or a duration (720h, 90d)", s)
}

// pathList collects repeated --api-keys flags into paths; the first flag
// replaces what the file or the environment gave.
type pathList struct {
	paths   *[]string
	flagged bool
}

func (p *pathList) String() string {
	if p.paths == nil {
		return ""
	}
	return strings.Join(*p.paths, string(os.PathListSeparator))
}

func (p *pathList) Set(v string) error {
	if v == "" {
		return errors.New("empty path")
	}
	if !p.flagged {
		*p.paths, p.flagged = nil, true
	}
	*p.paths = append(*p.paths, v)
	return nil
}

// bindAuthFlags adds the queen's HTTP authentication flags, shared by queen
// and up, bound to f's [queen] section.
func bindAuthFlags(fs *flag.FlagSet, f *config.File) {
	fs.Var(&pathList{paths: &f.Queen.APIKeys}, "api-keys", "API key file, or a directory of *.json key files (repeatable; queen.api_keys; env RBEE_QUEEN_API_KEYS or RBEE_API_KEYS, a path list); SIGHUP reloads them")
	fs.BoolVar(&f.Queen.AllowNoAuth, "allow-no-auth", f.Queen.AllowNoAuth, "serve HTTP on a non-loopback address without API keys (queen.allow_no_auth)")
	fs.BoolVar(&f.Queen.MetricsOpen, "metrics-open", f.Queen.MetricsOpen, "serve /metrics without an API key (queen.metrics_open)")
}

// loadKeys reads the key files f names into the queen's config and checks
// that the queen may serve as configured.
func loadKeys(f config.File, cfg *queen.Config) error {
	if len(f.Queen.APIKeys) > 0 {
		set, err := apikey.Load(f.Queen.APIKeys)
		if err != nil {
			return err
		}
		cfg.Keys = set
	}
	if err := cfg.CheckAuth(); err != nil {
		return usageError{err}
	}
	return nil
}

// keysApplier re-reads the key files on every reload; a reload that fails
// keeps the keys loaded before and says why. Each reload, and each failed
// one, is audited with audit. Other key paths apply at the next start.
func keysApplier(keys *apikey.Set, log *slog.Logger, audit func(schemas.AuditEvent)) applier {
	return func(context.Context, config.File, config.File) error {
		if keys == nil {
			log.Info("reload: no API keys to reload")
			return nil
		}
		ch, err := keys.Reload()
		if err != nil {
			log.Error("reload: API keys not reloaded; the keys loaded before stay in force", "err", err)
			audit(schemas.AuditEvent{Type: schemas.AuditKeysReloaded, Code: schemas.CodeInvalidRequest, Reason: err.Error()})
			return fmt.Errorf("API keys: %w", err)
		}
		log.Info("reload: API keys reloaded", "keys", ch.Total, "added", ch.Added, "removed", ch.Removed, "rotated", ch.Rotated)
		audit(schemas.AuditEvent{Type: schemas.AuditKeysReloaded, Reason: fmt.Sprintf("%d keys; added %v, removed %v, rotated %v",
			ch.Total, ch.Added, ch.Removed, ch.Rotated)})
		if ch.Total == 0 {
			log.Warn("no API key is left: every HTTP request is refused")
		}
		return nil
	}
}
