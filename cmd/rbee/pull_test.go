package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/hive/bundled"
	"github.com/rbee-dev/rbee/internal/progress"
)

// modelServer serves the bundled model as a file server does (ranges
// included) at /m/stories260K.gguf, and misbehaves elsewhere: /cut/ stops
// half-way, /norange/ ignores Range, /error/ fails, /junk.gguf is no GGUF.
type modelServer struct {
	*httptest.Server
	model  []byte
	mu     sync.Mutex
	ranges []string // the Range headers asked for
}

func newModelServer(t *testing.T) *modelServer {
	t.Helper()
	model, err := os.ReadFile(modelPath)
	if err != nil {
		t.Fatal(err)
	}
	s := &modelServer{model: model}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.ranges = append(s.ranges, r.Header.Get("Range"))
		s.mu.Unlock()
		switch {
		case strings.HasPrefix(r.URL.Path, "/m/"):
			http.ServeContent(w, r, "stories260K.gguf", time.Time{}, bytes.NewReader(model))
		case strings.HasPrefix(r.URL.Path, "/norange/"):
			_, _ = w.Write(model)
		case strings.HasPrefix(r.URL.Path, "/cut/"):
			w.Header().Set("Content-Length", strconv.Itoa(len(model)))
			_, _ = w.Write(model[:len(model)/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops
		case strings.HasPrefix(r.URL.Path, "/error/"):
			http.Error(w, "disk on fire", http.StatusInternalServerError)
		case r.URL.Path == "/junk.gguf":
			_, _ = w.Write(bytes.Repeat([]byte("not a model "), 1000))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *modelServer) asked() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.ranges...)
}

func newPuller(free uint64) (*puller, *bytes.Buffer) {
	var out bytes.Buffer
	return &puller{client: pullClient(), free: func(string) (uint64, error) { return free, nil },
		screen: progress.NewScreen(&out)}, &out
}

// dirHolds fails the test unless dir holds exactly names.
func dirHolds(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}

func TestPullDownloadsAndChecks(t *testing.T) {
	s := newModelServer(t)
	dir := t.TempDir()
	dest := filepath.Join(dir, "stories260K.gguf")
	sum := sha256.Sum256(s.model)
	p, out := newPuller(1 << 40)
	res, err := p.pull(context.Background(), s.URL+"/m/stories260K.gguf", dest, sum[:], "pull stories260K")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, s.model) || res.size != int64(len(s.model)) || !bytes.Equal(res.sum, sum[:]) {
		t.Errorf("pulled %d bytes, sum %x: not the model", res.size, res.sum)
	}
	dirHolds(t, dir, "stories260K.gguf")
	if !strings.Contains(out.String(), "pull stories260K: 100% (1.1 MiB of 1.1 MiB)\n") {
		t.Errorf("progress %q", out.String())
	}
}

// A download cut off half-way leaves its part, which the next pull
// resumes with a Range request for the rest.
func TestPullResumesCutOffDownload(t *testing.T) {
	s := newModelServer(t)
	dir := t.TempDir()
	dest := filepath.Join(dir, "stories260K.gguf")
	p, _ := newPuller(1 << 40)
	_, err := p.pull(context.Background(), s.URL+"/cut/stories260K.gguf", dest, nil, "pull")
	if err == nil || !strings.Contains(err.Error(), "cut off at") || !strings.Contains(err.Error(), "again to resume") {
		t.Fatalf("cut-off pull: %v", err)
	}
	st, err := os.Stat(dest + ".part")
	if err != nil || st.Size() == 0 || st.Size() >= int64(len(s.model)) {
		t.Fatalf("part after the cut: %v, %v", st, err)
	}
	sum := sha256.Sum256(s.model)
	if _, err := p.pull(context.Background(), s.URL+"/m/stories260K.gguf", dest, sum[:], "pull"); err != nil {
		t.Fatal(err)
	}
	asked := s.asked()
	if want := "bytes=" + strconv.FormatInt(st.Size(), 10) + "-"; asked[len(asked)-1] != want {
		t.Errorf("resumed with Range %q, want %q", asked[len(asked)-1], want)
	}
	if got, _ := os.ReadFile(dest); !bytes.Equal(got, s.model) {
		t.Error("the resumed file is not the model")
	}
	dirHolds(t, dir, "stories260K.gguf")

	// A part that is whole already is finished without a byte more; one
	// a server that ignores ranges answers is downloaded from the start.
	for _, tc := range []struct{ path, part string }{
		{"/m/stories260K.gguf", string(s.model)},
		{"/norange/stories260K.gguf", "garbage"},
	} {
		if err := os.WriteFile(dest+".part", []byte(tc.part), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(dest); err != nil {
			t.Fatal(err)
		}
		if _, err := p.pull(context.Background(), s.URL+tc.path, dest, sum[:], "pull"); err != nil {
			t.Errorf("%s: %v", tc.path, err)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, s.model) {
			t.Errorf("%s: the file is not the model", tc.path)
		}
	}
}

// Each refusal leaves no file behind: a checksum that differs, a file
// that is no GGUF, one larger than the free space, a server error (with
// its status and message).
func TestPullRefusals(t *testing.T) {
	s := newModelServer(t)
	wrong := sha256.Sum256([]byte("something else"))
	for _, tc := range []struct {
		name, path string
		sum        []byte
		free       uint64
		want       string
	}{
		{"checksum", "/m/stories260K.gguf", wrong[:], 1 << 40, "sha256 is "},
		{"not gguf", "/junk.gguf", nil, 1 << 40, "not a GGUF model"},
		{"disk full", "/m/stories260K.gguf", nil, 1 << 20, "the download needs 1.1 MiB and "},
		{"server error", "/error/stories260K.gguf", nil, 1 << 40, "the server answered 500 Internal Server Error: disk on fire"},
		{"not found", "/nothing.gguf", nil, 1 << 40, "404 Not Found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			p, _ := newPuller(tc.free)
			_, err := p.pull(context.Background(), s.URL+tc.path, filepath.Join(dir, "m.gguf"), tc.sum, "pull")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("pull: %v, want %q", err, tc.want)
			}
			dirHolds(t, dir)
		})
	}
}

func TestModelNameOfURL(t *testing.T) {
	for raw, want := range map[string]string{
		"https://h/models/llama-3.2-1b-q8_0.gguf?download=true": "llama-3-2-1b-q8_0",
		"https://h/stories260K.GGUF":                            "stories260K",
		"https://h/.hidden":                                     "hidden",
	} {
		u, _ := url.Parse(raw)
		if got := modelNameOf(u); got != want {
			t.Errorf("%s: %q, want %q", raw, got, want)
		}
	}
}

// DEPLOYMENT.md's rbee pull runs as written against a server with the
// bundled model, only the host changed: the model lands in the hive's
// models directory under the user's cache, checked; a second pull of it
// is refused.
func TestPullDocExample(t *testing.T) {
	s := newModelServer(t)
	cmds := docCommands(t, "../../docs/DEPLOYMENT.md", "rbee pull ")
	cache := t.TempDir()
	for _, c := range cmds {
		c = strings.ReplaceAll(c, "https://models.example.com/", s.URL+"/m/")
		cmd := exec.Command(rbeeBin, strings.Fields(c)[1:]...)
		cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+cache)
		out, err := cmd.CombinedOutput()
		dest := filepath.Join(cache, "rbee", "models", bundled.Name+".gguf")
		if err != nil || !strings.Contains(string(out), "pulled stories260K: "+dest) || !strings.Contains(string(out), bundled.SHA256) {
			t.Fatalf("DEPLOYMENT.md: %s: %v\n%s", c, err, out)
		}
		if got, _ := os.ReadFile(dest); !bytes.Equal(got, s.model) {
			t.Errorf("%s holds no model", dest)
		}
		out, err = exec.Command(rbeeBin, append(strings.Fields(c)[1:], "--cache-dir", filepath.Join(cache, "rbee"))...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--force") {
			t.Errorf("a second pull: %v\n%s", err, out)
		}
	}
}
