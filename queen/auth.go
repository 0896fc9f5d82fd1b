package queen

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/schemas"
)

// HeaderAPIKey is the header some clients send their key in instead of
// Authorization: Bearer.
const HeaderAPIKey = "X-Api-Key"

// loopback reports whether addr (host:port) listens only on this machine.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckAuth refuses to serve every network without keys unless told to: a
// queen reachable from other machines would give anyone its GPUs. New
// checks it; callers may check before connecting to NATS.
func (c *Config) CheckAuth() error {
	if c.Keys == nil && !c.AllowNoAuth && !loopback(c.HTTPAddr) {
		return fmt.Errorf("refusing to serve HTTP on %s without API keys: give key files (--api-keys), "+
			"listen on a loopback address, or allow anyone who can reach it (--allow-no-auth)", c.HTTPAddr)
	}
	return nil
}

type keyCtx struct{}

// keyOf is the API key a request was authenticated with; nil without keys.
func keyOf(ctx context.Context) *apikey.Key {
	k, _ := ctx.Value(keyCtx{}).(*apikey.Key)
	return k
}

// open reports whether a route is served without a key: health checks,
// which load balancers call without credentials, and /metrics when
// configured so.
func (q *Queen) open(pattern string) bool {
	switch pattern {
	case "GET /healthz", "GET /readyz":
		return true
	case "GET /metrics":
		return q.cfg.MetricsOpen
	}
	return false
}

// presentedKey reads the key from Authorization: Bearer, else X-Api-Key.
// The key is taken exactly as sent: a key with other case or whitespace
// around it is another key.
func presentedKey(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, _ := strings.Cut(h, " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return ""
		}
		return rest
	}
	return r.Header.Get(HeaderAPIKey)
}

// authenticate checks the request's key and rate. It answers the request
// itself when refusing it, and otherwise returns the request with its key
// in the context.
func (q *Queen) authenticate(w http.ResponseWriter, r *http.Request, pattern string) (*http.Request, bool) {
	if q.cfg.Keys == nil || q.open(pattern) {
		return r, true
	}
	secret := presentedKey(r)
	k, err := q.cfg.Keys.Authenticate(secret, q.now())
	if err != nil {
		attrs := []any{"reason", err, "path", clip(r.URL.Path), "remote", r.RemoteAddr, "request_id", requestID(r.Context())}
		if secret != "" {
			attrs = append(attrs, "key_fingerprint", apikey.Fingerprint(secret))
		}
		if k != nil {
			attrs = append(attrs, "principal", k.Name)
		}
		q.log.Info("request refused: API key", attrs...)
		ev := schemas.AuditEvent{Type: schemas.AuditAuthRefused, Code: schemas.CodeInvalidAPIKey, Reason: err.Error() + ": " + clip(r.URL.Path)}
		if secret != "" {
			ev.Fingerprint = apikey.Fingerprint(secret)
		}
		if k != nil {
			ev.Principal = k.Name
		}
		q.auditor.Record(ev)
		challenge := `Bearer realm="rbee"`
		if !errors.Is(err, apikey.ErrMissing) {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, schemas.Errorf(schemas.CodeInvalidAPIKey, "%s: send it as Authorization: Bearer KEY", err))
		return nil, false
	}
	if ok, wait := k.Reserve(q.now()); !ok {
		q.log.Info("request refused: rate", "principal", k.Name, "key_fingerprint", k.Fingerprint(), "retry_after", wait)
		q.auditor.Record(schemas.AuditEvent{Type: schemas.AuditAuthRefused, Code: schemas.CodeRateLimited,
			Principal: k.Name, Fingerprint: k.Fingerprint(), Reason: clip(r.URL.Path)})
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		writeError(w, schemas.Errorf(schemas.CodeRateLimited, "the API key %s is past its rate; retry after %s", k.Name, w.Header().Get("Retry-After")+"s"))
		return nil, false
	}
	return r.WithContext(context.WithValue(r.Context(), keyCtx{}, k)), true
}

// authorize sets the job's principal and refuses a model outside the
// key's scope.
func authorize(ctx context.Context, ir *schemas.InferRequest) error {
	k := keyOf(ctx)
	if k == nil {
		return nil
	}
	if !k.Allows(ir.Model) {
		return schemas.Errorf(schemas.CodeForbidden, "the API key %s may not use the model %q", k.Name, ir.Model)
	}
	ir.Principal = k.Name
	return nil
}

// principal is the name of the request's key, for logs; "" without keys.
func principal(ctx context.Context) string {
	if k := keyOf(ctx); k != nil {
		return k.Name
	}
	return ""
}

func fingerprint(ctx context.Context) string {
	if k := keyOf(ctx); k != nil {
		return k.Fingerprint()
	}
	return ""
}
