package apikey

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func writeKey(t *testing.T, dir, name, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // umask may have narrowed it
		t.Fatal(err)
	}
	return p
}

func TestWriteNewAndAuthenticate(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "alice.json")
	exp := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	secret, err := WriteNew(p, File{Name: "alice", Models: []string{"m1"}, Expires: exp, Rate: "5/m"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, Prefix) || len(secret) != len(Prefix)+26 {
		t.Errorf("key %q: want %s and 26 characters", secret, Prefix)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(p)
	if strings.Contains(string(data), secret) {
		t.Errorf("the key file holds the key itself:\n%s", data)
	}
	if _, err := WriteNew(p, File{Name: "alice"}); err == nil {
		t.Error("WriteNew replaced an existing file")
	}

	s, err := Load([]string{p})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2029, 1, 1, 0, 0, 0, 0, time.UTC)
	k, err := s.Authenticate(secret, now)
	if err != nil || k.Name != "alice" {
		t.Fatalf("Authenticate: %v, %v", k, err)
	}
	if k.Fingerprint() != Fingerprint(secret) || len(k.Fingerprint()) != 8 {
		t.Errorf("fingerprint %q, want the 8 hex digits of %q", k.Fingerprint(), Fingerprint(secret))
	}
	if !k.Allows("m1") || k.Allows("m2") {
		t.Error("scope: want m1 only")
	}
	for _, bad := range []string{strings.ToUpper(secret), " " + secret, secret + " ", secret + "\n", secret[:len(secret)-1], secret + "x", "\t" + secret} {
		if _, err := s.Authenticate(bad, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("Authenticate(%q): %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := s.Authenticate("", now); !errors.Is(err, ErrMissing) {
		t.Errorf("empty key: %v, want ErrMissing", err)
	}
	if _, err := s.Authenticate(secret, exp); !errors.Is(err, ErrExpired) {
		t.Errorf("at its expiry: %v, want ErrExpired", err)
	}
}

func TestRate(t *testing.T) {
	dir := t.TempDir()
	p := writeKey(t, dir, "k.json", `{"name":"k","key":"0123456789abcdef","rate":"2/s","burst":3}`, 0o600)
	s, err := Load([]string{p})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	k, err := s.Authenticate("0123456789abcdef", now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if ok, _ := k.Reserve(now); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	ok, wait := k.Reserve(now)
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("fourth request: ok %v, retry after %v; want refused, about 500ms", ok, wait)
	}
	if ok, _ := k.Reserve(now.Add(wait)); !ok {
		t.Error("refused after waiting what Reserve said")
	}

	// A reload that leaves the key as it was keeps its bucket empty.
	if _, err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	k2, _ := s.Authenticate("0123456789abcdef", now)
	if ok, _ := k2.Reserve(now.Add(wait)); ok {
		t.Error("a reload refilled an unchanged key's rate")
	}

	for _, c := range []struct {
		in    string
		limit float64
		burst int
	}{{"10/s", 10, 10}, {"60/m", 1, 60}, {"3600/h", 1, 3600}, {"0.5/s", 0.5, 1}} {
		l, b, err := ParseRate(c.in)
		if err != nil || float64(l) != c.limit || b != c.burst {
			t.Errorf("ParseRate(%q) = %v, %d, %v; want %v, %d", c.in, l, b, err, c.limit, c.burst)
		}
	}
	for _, bad := range []string{"", "10", "0/s", "-1/s", "x/s", "10/d", "NaN/s", "Inf/s"} {
		if _, _, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) accepted", bad)
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no POSIX modes")
	}
	dir := t.TempDir()
	open := writeKey(t, dir, "open.json", `{"name":"a","key":"0123456789abcdef"}`, 0o644)
	_, err := Load([]string{open})
	if err == nil || !strings.Contains(err.Error(), "chmod 600 "+open) || !strings.Contains(err.Error(), "0644") {
		t.Errorf("world-readable file: %v; want a message naming the file and chmod 600", err)
	}
	groupDir := t.TempDir()
	writeKey(t, groupDir, "g.json", `{"name":"g","key":"0123456789abcdef"}`, 0o640)
	if _, err := Load([]string{groupDir}); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("group-readable file in a directory: %v", err)
	}

	for name, body := range map[string]string{
		"badname":   `{"name":"a b","key":"0123456789abcdef"}`,
		"nokey":     `{"name":"a"}`,
		"both":      `{"name":"a","key":"0123456789abcdef","sha256":"` + Hash("x") + `"}`,
		"shorthash": `{"name":"a","sha256":"abcd"}`,
		"shortkey":  `{"name":"a","key":"short"}`,
		"spacekey":  `{"name":"a","key":" 0123456789abcdef"}`,
		"unknown":   `{"name":"a","key":"0123456789abcdef","scopes":["x"]}`,
		"badrate":   `{"name":"a","key":"0123456789abcdef","rate":"fast"}`,
		"burstonly": `{"name":"a","key":"0123456789abcdef","burst":3}`,
		"notjson":   `name=a key=0123456789abcdef`,
		"emptymod":  `{"name":"a","key":"0123456789abcdef","models":[""]}`,
	} {
		d := t.TempDir()
		p := writeKey(t, d, name+".json", body, 0o600)
		_, err := Load([]string{p})
		if err == nil {
			t.Errorf("%s: loaded %s", name, body)
			continue
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
		if strings.Contains(err.Error(), "0123456789abcdef") {
			t.Errorf("%s: error %q quotes the key", name, err)
		}
	}

	dup := t.TempDir()
	writeKey(t, dup, "a.json", `{"name":"a","key":"0123456789abcdef"}`, 0o600)
	writeKey(t, dup, "b.json", `{"name":"a","key":"fedcba9876543210"}`, 0o600)
	if _, err := Load([]string{dup}); err == nil || !strings.Contains(err.Error(), "both name") {
		t.Errorf("two keys named a: %v", err)
	}
	same := t.TempDir()
	writeKey(t, same, "a.json", `{"name":"a","key":"0123456789abcdef"}`, 0o600)
	writeKey(t, same, "b.json", `{"name":"b","key":"0123456789abcdef"}`, 0o600)
	if _, err := Load([]string{same}); err == nil || !strings.Contains(err.Error(), "same key") {
		t.Errorf("one key in two files: %v", err)
	}
	if _, err := Load([]string{t.TempDir()}); err == nil {
		t.Error("an empty directory loaded")
	}
	if _, err := Load(nil); err == nil {
		t.Error("no paths loaded")
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	writeKey(t, dir, "a.json", `{"name":"a","key":"aaaaaaaaaaaaaaaa"}`, 0o600)
	writeKey(t, dir, "b.json", `{"name":"b","key":"bbbbbbbbbbbbbbbb"}`, 0o600)
	writeKey(t, dir, "ignored.txt", `not a key`, 0o644)
	writeKey(t, dir, ".hidden.json", `not a key`, 0o644)
	s, err := Load([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if s.Len() != 2 {
		t.Fatalf("%d keys, want 2", s.Len())
	}

	// Revoke a, rotate b, add c.
	os.Remove(filepath.Join(dir, "a.json"))
	writeKey(t, dir, "b.json", `{"name":"b","key":"BBBBBBBBBBBBBBBB"}`, 0o600)
	writeKey(t, dir, "c.json", `{"name":"c","key":"cccccccccccccccc"}`, 0o600)
	ch, err := s.Reload()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ch.Added, ",") != "c" || strings.Join(ch.Removed, ",") != "a" || strings.Join(ch.Rotated, ",") != "b" || ch.Total != 2 {
		t.Errorf("change %+v: want c added, a removed, b rotated, 2 keys", ch)
	}
	for secret, want := range map[string]error{"aaaaaaaaaaaaaaaa": ErrInvalid, "bbbbbbbbbbbbbbbb": ErrInvalid, "BBBBBBBBBBBBBBBB": nil, "cccccccccccccccc": nil} {
		if _, err := s.Authenticate(secret, now); !errors.Is(err, want) {
			t.Errorf("after reload, %s: %v, want %v", secret, err, want)
		}
	}

	// A bad file keeps the keys as they were.
	writeKey(t, dir, "d.json", `{"name":`, 0o600)
	if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), "d.json") {
		t.Errorf("reload with a broken file: %v", err)
	}
	if _, err := s.Authenticate("cccccccccccccccc", now); err != nil {
		t.Errorf("a failed reload dropped key c: %v", err)
	}
	if runtime.GOOS != "windows" {
		os.Remove(filepath.Join(dir, "d.json"))
		writeKey(t, dir, "c.json", `{"name":"c","key":"cccccccccccccccc"}`, 0o604)
		if _, err := s.Reload(); err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("reload with an open file: %v", err)
		}
	}

	// A key file named itself, then deleted: revoked on reload.
	single := t.TempDir()
	named := writeKey(t, single, "n.json", `{"name":"n","key":"nnnnnnnnnnnnnnnn"}`, 0o600)
	s3, err := Load([]string{named})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(named)
	if ch, err := s3.Reload(); err != nil || ch.Total != 0 || strings.Join(ch.Removed, ",") != "n" {
		t.Fatalf("reload without the named file: %+v, %v", ch, err)
	}
	if _, err := s3.Authenticate("nnnnnnnnnnnnnnnn", now); !errors.Is(err, ErrInvalid) {
		t.Errorf("deleted key file's key: %v", err)
	}

	// Every key gone: allowed, and everything is refused.
	empty := t.TempDir()
	writeKey(t, empty, "z.json", `{"name":"z","key":"zzzzzzzzzzzzzzzz"}`, 0o600)
	s2, err := Load([]string{empty})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(empty, "z.json"))
	if ch, err := s2.Reload(); err != nil || ch.Total != 0 {
		t.Fatalf("revoke all: %+v, %v", ch, err)
	}
	if _, err := s2.Authenticate("zzzzzzzzzzzzzzzz", now); !errors.Is(err, ErrInvalid) {
		t.Errorf("revoked key: %v", err)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	p := writeKey(t, dir, "key", "rbee_abc\n", 0o600)
	if s, err := ReadSecret(p); err != nil || s != "rbee_abc" {
		t.Errorf("ReadSecret: %q, %v", s, err)
	}
	if runtime.GOOS != "windows" {
		open := writeKey(t, dir, "open", "rbee_abc\n", 0o644)
		if _, err := ReadSecret(open); err == nil || !strings.Contains(err.Error(), "chmod 600 "+open) {
			t.Errorf("world-readable: %v", err)
		}
	}
	for name, body := range map[string]string{"empty": "", "two": "a\nb\n", "blank": "\n"} {
		if _, err := ReadSecret(writeKey(t, dir, name, body, 0o600)); err == nil {
			t.Errorf("%s: accepted %q", name, body)
		}
	}
}

// FuzzDecode feeds arbitrary key files to the parser: it never panics, and
// a key it accepts has a name and a rate above zero.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"name":"a","key":"0123456789abcdef"}`,
		`{"name":"a","sha256":"` + Hash("x") + `","models":["m"],"expires":"2030-01-01T00:00:00Z","rate":"5/m","burst":2}`,
		`{"name":"a","rate":"1e309/s","key":"0123456789abcdef"}`, `{"name":`, `[]`, `null`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := decode(data, "f.json")
		if err == nil && (k.Name == "" || k.Burst < 0 || (k.Limit <= 0)) {
			t.Fatalf("accepted %q as %+v", data, k)
		}
	})
}
