// Package apikey loads HTTP API keys from files and checks the keys clients
// present. A key file is one JSON object:
//
//	{"name": "alice", "sha256": "<hex of the key's SHA-256>",
//	 "models": ["stories260K"], "expires": "2027-01-01T00:00:00Z",
//	 "rate": "10/s", "burst": 20}
//
// Only name and one of sha256 or key (the key itself) are required. Files
// must be readable by their owner alone (mode 0600 or 0400): a key file
// anyone else can read is refused. A Set holds the keys of one or more files
// and directories and loads them again on Reload, so keys are rotated and
// revoked without a restart.
package apikey

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Prefix starts every key Generate makes, so that a leaked key is easy to
// recognise in logs and by secret scanners.
const Prefix = "rbee_"

// Why Authenticate refused a key.
var (
	ErrMissing = errors.New("no API key given")
	ErrInvalid = errors.New("the API key is not valid")
	ErrExpired = errors.New("the API key has expired")
)

// maxFileBytes bounds a key file: it holds a few short fields.
const maxFileBytes = 64 << 10

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// File is a key file's content.
type File struct {
	Name string `json:"name"`
	// SHA256 is the hex SHA-256 of the key: the file then does not hold
	// the key itself. Key holds the key instead, for keys made elsewhere.
	SHA256 string `json:"sha256,omitempty"`
	Key    string `json:"key,omitempty"`
	// Models the key may use; none means every model.
	Models  []string  `json:"models,omitempty"`
	Expires time.Time `json:"expires,omitzero"`
	// Rate is "N/s", "N/m" or "N/h"; empty means no limit. Burst is how
	// many requests may come at once (default N).
	Rate  string `json:"rate,omitempty"`
	Burst int    `json:"burst,omitempty"`
}

// Key is one loaded key. Its secret is not kept, only its hash.
type Key struct {
	Name    string
	Models  []string
	Expires time.Time
	Limit   rate.Limit // requests per second; rate.Inf when unlimited
	Burst   int
	File    string

	hash    [sha256.Size]byte
	limiter *rate.Limiter
}

// Fingerprint is what logs show of a key: the first 8 hex digits of its
// SHA-256, enough to tell keys apart and useless to an attacker.
func (k *Key) Fingerprint() string { return hex.EncodeToString(k.hash[:4]) }

// Fingerprint is the fingerprint of a key given in full.
func Fingerprint(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:4])
}

// Allows reports whether the key may use model.
func (k *Key) Allows(model string) bool {
	return len(k.Models) == 0 || slices.Contains(k.Models, model)
}

// Reserve takes one request from the key's rate at now. When the key is
// past its rate it takes nothing and says how long to wait.
func (k *Key) Reserve(now time.Time) (ok bool, retryAfter time.Duration) {
	if k.limiter == nil {
		return true, 0
	}
	r := k.limiter.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// ParseRate reads "N/s", "N/m" or "N/h" as requests per second, with N
// as the default burst.
func ParseRate(s string) (rate.Limit, int, error) {
	num, unit, ok := strings.Cut(s, "/")
	n, err := strconv.ParseFloat(num, 64)
	if !ok || err != nil || n <= 0 || math.IsInf(n, 0) || n != n {
		return 0, 0, fmt.Errorf("rate %q: want N/s, N/m or N/h with N above 0", s)
	}
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[unit]
	if per == 0 {
		return 0, 0, fmt.Errorf("rate %q: the unit is s, m or h", s)
	}
	return rate.Limit(n / per), max(1, int(math.Ceil(n))), nil
}

// Generate returns a new random key: Prefix and 26 base32 characters (130
// bits).
func Generate() string { return Prefix + strings.ToLower(rand.Text()) }

// Hash is the hex SHA-256 of a key, as a key file's sha256 field holds it.
func Hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// WriteNew generates a key, writes f with its hash to path with mode 0600
// (refusing to replace a file), and returns the key: it is not stored
// anywhere else.
func WriteNew(path string, f File) (string, error) {
	secret := Generate()
	f.SHA256, f.Key = Hash(secret), ""
	if _, err := parse(f, path); err != nil {
		return "", err
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return "", err
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("create key file: %w", err)
	}
	if _, err := out.Write(append(data, '\n')); err != nil {
		out.Close()
		os.Remove(path)
		return "", fmt.Errorf("write key file %s: %w", path, err)
	}
	if err := out.Close(); err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write key file %s: %w", path, err)
	}
	return secret, nil
}

// parse checks a key file's content.
func parse(f File, path string) (*Key, error) {
	if !namePattern.MatchString(f.Name) {
		return nil, fmt.Errorf("%s: name %q: want 1-64 letters, digits, '_', '.', '@' or '-'", path, f.Name)
	}
	k := &Key{Name: f.Name, Expires: f.Expires, Limit: rate.Inf, File: path}
	switch {
	case f.SHA256 != "" && f.Key != "":
		return nil, fmt.Errorf("%s: set sha256 or key, not both", path)
	case f.SHA256 != "":
		b, err := hex.DecodeString(f.SHA256)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s: sha256: want 64 hex digits", path)
		}
		copy(k.hash[:], b)
	case f.Key != "":
		if strings.TrimSpace(f.Key) != f.Key || len(f.Key) < 16 {
			return nil, fmt.Errorf("%s: key: want at least 16 characters, without surrounding whitespace", path)
		}
		k.hash = sha256.Sum256([]byte(f.Key))
	default:
		return nil, fmt.Errorf("%s: no sha256 and no key", path)
	}
	for _, m := range f.Models {
		if m == "" || len(m) > 128 {
			return nil, fmt.Errorf("%s: models: %q is not a model name", path, m)
		}
	}
	k.Models = slices.Clone(f.Models)
	if f.Rate != "" {
		limit, burst, err := ParseRate(f.Rate)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if f.Burst < 0 {
			return nil, fmt.Errorf("%s: burst %d is negative", path, f.Burst)
		}
		if f.Burst > 0 {
			burst = f.Burst
		}
		k.Limit, k.Burst = limit, burst
	} else if f.Burst != 0 {
		return nil, fmt.Errorf("%s: burst without rate", path)
	}
	return k, nil
}

// checkMode refuses a file that its group or others may read or write.
func checkMode(path string, fi fs.FileInfo) error {
	if runtime.GOOS == "windows" {
		return nil // no POSIX modes; ACLs guard the file
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("key file %s has mode %04o: group or others may read it; run: chmod 600 %s", path, perm, path)
	}
	return nil
}

// readFile loads one key file.
func readFile(path string) (*Key, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s is not a regular file", path)
	}
	if err := checkMode(path, fi); err != nil {
		return nil, err
	}
	if fi.Size() > maxFileBytes {
		return nil, fmt.Errorf("key file %s is %d bytes, more than a key file holds", path, fi.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	return decode(data, path)
}

// decode reads a key file's content.
func decode(data []byte, path string) (*Key, error) {
	var f File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		// The decoder's message may quote the file; it must not quote a key.
		return nil, fmt.Errorf("key file %s is not a key file (a JSON object with name and sha256 or key): %s", path, jsonProblem(err))
	}
	return parse(f, path)
}

// jsonProblem describes a decoding error without the text it read.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return err.Error()[len("json: "):]
	}
	return "invalid JSON"
}

// load reads every key under paths: files, and the *.json files of
// directories. With missingOK a path that no longer exists holds no keys:
// deleting a key file named on the command line revokes it.
func load(paths []string, missingOK bool) ([]*Key, error) {
	var keys []*Key
	for _, p := range paths {
		fi, err := os.Stat(p)
		if missingOK && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
		files := []string{p}
		if fi.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return nil, fmt.Errorf("api keys: %w", err)
			}
			files = files[:0]
			for _, e := range entries {
				if n := e.Name(); !strings.HasPrefix(n, ".") && strings.HasSuffix(n, ".json") {
					files = append(files, filepath.Join(p, n))
				}
			}
		}
		for _, f := range files {
			k, err := readFile(f)
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
		}
	}
	for i, k := range keys {
		for _, o := range keys[:i] {
			switch {
			case o.Name == k.Name:
				return nil, fmt.Errorf("api keys: %s and %s both name the key %q", o.File, k.File, k.Name)
			case o.hash == k.hash:
				return nil, fmt.Errorf("api keys: %s and %s hold the same key", o.File, k.File)
			}
		}
	}
	return keys, nil
}

// Set is the keys of some files and directories. It is safe for
// concurrent use.
type Set struct {
	paths []string
	mu    sync.Mutex // serialises Reload
	keys  atomic.Pointer[[]*Key]
}

// Load reads the keys under paths (files, or directories whose *.json
// files are keys). It fails when a file is unreadable, malformed or
// readable by others, or when there is no key at all.
func Load(paths []string) (*Set, error) {
	if len(paths) == 0 {
		return nil, errors.New("api keys: no key file given")
	}
	keys, err := load(paths, false)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("api keys: no *.json key file in %s", strings.Join(paths, ", "))
	}
	s := &Set{paths: slices.Clone(paths)}
	for _, k := range keys {
		k.limiter = newLimiter(k)
	}
	s.keys.Store(&keys)
	return s, nil
}

func newLimiter(k *Key) *rate.Limiter {
	if k.Limit == rate.Inf {
		return nil
	}
	return rate.NewLimiter(k.Limit, k.Burst)
}

// Change is what a Reload did, by key name.
type Change struct {
	Added, Removed, Rotated []string
	Total                   int
}

// Reload reads the files again; a file or directory given to Load that is
// gone now holds no keys. On any error the keys stay as they were.
// A key whose name, secret and rate are unchanged keeps its rate's state.
// No key left is allowed: every request is refused then, which is how all
// keys are revoked at once.
func (s *Set) Reload() (Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fresh, err := load(s.paths, true)
	if err != nil {
		return Change{}, err
	}
	old := *s.keys.Load()
	var ch Change
	for _, k := range fresh {
		i := slices.IndexFunc(old, func(o *Key) bool { return o.Name == k.Name })
		switch {
		case i < 0:
			ch.Added = append(ch.Added, k.Name)
		case old[i].hash != k.hash:
			ch.Rotated = append(ch.Rotated, k.Name)
		}
		if i >= 0 && old[i].hash == k.hash && old[i].Limit == k.Limit && old[i].Burst == k.Burst {
			k.limiter = old[i].limiter
		} else {
			k.limiter = newLimiter(k)
		}
	}
	for _, o := range old {
		if !slices.ContainsFunc(fresh, func(k *Key) bool { return k.Name == o.Name }) {
			ch.Removed = append(ch.Removed, o.Name)
		}
	}
	ch.Total = len(fresh)
	s.keys.Store(&fresh)
	return ch, nil
}

// Len is the number of keys.
func (s *Set) Len() int { return len(*s.keys.Load()) }

// Authenticate finds the key secret is, comparing it with every key in
// constant time so that the time taken tells nothing about how close a
// guess came. An expired key is ErrExpired (with the key, for the log).
func (s *Set) Authenticate(secret string, now time.Time) (*Key, error) {
	if secret == "" {
		return nil, ErrMissing
	}
	h := sha256.Sum256([]byte(secret))
	var found *Key
	for _, k := range *s.keys.Load() {
		if subtle.ConstantTimeCompare(h[:], k.hash[:]) == 1 {
			found = k
		}
	}
	switch {
	case found == nil:
		return nil, ErrInvalid
	case !found.Expires.IsZero() && !now.Before(found.Expires):
		return found, ErrExpired
	}
	return found, nil
}

// ReadSecret reads a key a client sends from a file holding it (a trailing
// newline is dropped). Like a key file, the file must be its owner's alone.
func ReadSecret(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("api key file: %w", err)
	}
	if err := checkMode(path, fi); err != nil {
		return "", err
	}
	if fi.Size() > maxFileBytes {
		return "", fmt.Errorf("api key file %s is %d bytes, more than a key", path, fi.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("api key file: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	if s == "" || strings.ContainsAny(s, "\r\n") {
		return "", fmt.Errorf("api key file %s: want the key alone on one line", path)
	}
	return s, nil
}
