package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/hive"
	"github.com/rbee-dev/rbee/infer/gguf"
	"github.com/rbee-dev/rbee/internal/config"
	"github.com/rbee-dev/rbee/internal/dirlock"
	"github.com/rbee-dev/rbee/internal/progress"
	"github.com/rbee-dev/rbee/schemas"
)

// runPull is "rbee pull URL": download a GGUF model into the hive's models
// directory, where a hive serves it from with --serve NAME=PATH.
func runPull(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := config.Load(configPath(args))
	if err != nil {
		return usageError{err}
	}
	cacheDir := f.Hive.CacheDir
	if cacheDir == "" {
		cacheDir = config.DefaultCacheDir()
	}
	fs := newFlags("pull", stderr)
	fs.String("config", "", "configuration file whose hive.cache_dir is used (env RBEE_CONFIG)")
	fs.StringVar(&cacheDir, "cache-dir", cacheDir, "where model files are kept, as the hive's --cache-dir (hive.cache_dir): the model goes to its models directory")
	name := fs.String("name", "", "the model's name, and its file's (default: from the URL)")
	sum := fs.String("sha256", "", "the file's SHA-256 in hex: a download that differs is refused and removed")
	force := fs.Bool("force", false, "replace a model file of the same name")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rbee pull [flags] URL")
		fs.PrintDefaults()
	}
	if err := fs.Parse(flagsFirst(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return usageError{fmt.Errorf("pull: want one URL, got %d arguments", fs.NArg())}
	}
	u, err := url.Parse(fs.Arg(0))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError{fmt.Errorf("pull: %q is not an http or https URL", fs.Arg(0))}
	}
	if *name == "" {
		*name = modelNameOf(u)
	}
	if !schemas.ValidModel(*name) {
		return usageError{fmt.Errorf("pull: model name %q: want 1-128 letters, digits, '-', '_' or ':' (set --name)", *name)}
	}
	var want []byte
	if *sum != "" {
		if want, err = hex.DecodeString(strings.ToLower(*sum)); err != nil || len(want) != sha256.Size {
			return usageError{fmt.Errorf("pull: --sha256 %q: want 64 hex digits", *sum)}
		}
	}
	dir := filepath.Join(cacheDir, "models")
	dest := filepath.Join(dir, *name+".gguf")
	if _, err := os.Stat(dest); err == nil && !*force {
		return fmt.Errorf("pull: %s exists: pull under another --name, or replace it with --force", dest)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil { // as the bundled model's
		return fmt.Errorf("pull: %w", err)
	}
	// Two pulls into one partial file would interleave their bytes.
	lock, err := dirlock.Acquire(dir)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	defer lock.Release()
	screen := progress.NewScreen(stderr)
	p := puller{client: pullClient(), free: hive.DiskFree, screen: screen}
	res, err := p.pull(ctx, u.String(), dest, want, "pull "+*name)
	if err != nil {
		return fmt.Errorf("pull: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "pulled %s: %s (%s, sha256 %x)\nserve it: rbee hive --serve %s=%s (or --catalog, to load it on demand)\n",
		*name, dest, progress.Bytes(res.size), res.sum, *name, dest)
	return err
}

// modelNameOf is a model name made of the URL's file name: llama-3.2-1b.gguf
// becomes llama-3-2-1b.
func modelNameOf(u *url.URL) string {
	base := path.Base(u.Path)
	if ext := path.Ext(base); strings.EqualFold(ext, ".gguf") {
		base = strings.TrimSuffix(base, ext)
	}
	name := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == ':':
			return r
		}
		return '-'
	}, base)
	return strings.TrimLeft(name, "-_:")
}

// pullClient gives up on a server that does not answer, never on a
// download that takes long.
func pullClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = 60 * time.Second
	return &http.Client{Transport: t}
}

// puller downloads model files.
type puller struct {
	client *http.Client
	free   func(dir string) (uint64, error) // free space on dir's filesystem
	screen *progress.Screen
}

type pulled struct {
	size int64
	sum  []byte
}

// pull downloads rawURL to dest by way of dest.part, which a pull that was
// cut off leaves for the next to resume with a Range request. The file
// must have the size the server gave, want's SHA-256 when want is set, and
// parse as GGUF before it is renamed into place; one that fails a check is
// removed.
func (p *puller) pull(ctx context.Context, rawURL, dest string, want []byte, label string) (pulled, error) {
	part := dest + ".part"
	have := int64(0)
	if st, err := os.Stat(part); err == nil {
		have = st.Size()
	}
	resp, err := p.get(ctx, rawURL, have)
	if err != nil {
		return pulled{}, err
	}
	defer resp.Body.Close()
	total := int64(-1)
	var body io.Reader = resp.Body
	switch resp.StatusCode {
	case http.StatusOK:
		have, total = 0, resp.ContentLength // no resume: the whole file, from the start
	case http.StatusPartialContent:
		start, size, err := contentRange(resp.Header.Get("Content-Range"))
		if err != nil || start != have {
			return pulled{}, fmt.Errorf("GET %s: the server sent bytes from %d, asked from %d (%v)", rawURL, start, have, err)
		}
		total = size
	case http.StatusRequestedRangeNotSatisfiable:
		// The partial file may be whole already; if not, it is not this
		// file's beginning.
		if _, size, err := contentRange(resp.Header.Get("Content-Range")); err != nil || size != have {
			if err := os.Remove(part); err != nil {
				return pulled{}, fmt.Errorf("remove %s: %w", part, err)
			}
			resp.Body.Close()
			return p.pull(ctx, rawURL, dest, want, label)
		}
		total, body = have, http.NoBody // whole: what the answer says is no part of the file
	default:
		msg := ""
		// A page of HTML says less than the status.
		if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "text/plain") || strings.HasPrefix(ct, "application/json") {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
			if m := strings.Join(strings.Fields(string(b)), " "); m != "" {
				msg = ": " + m
			}
		}
		return pulled{}, fmt.Errorf("GET %s: the server answered %s%s", rawURL, resp.Status, msg)
	}
	if total >= 0 {
		if err := p.checkRoom(filepath.Dir(dest), total-have); err != nil {
			return pulled{}, err
		}
	}

	flags := os.O_WRONLY | os.O_CREATE | os.O_APPEND
	if have == 0 {
		flags |= os.O_TRUNC
	}
	out, err := os.OpenFile(part, flags, 0o644)
	if err != nil {
		return pulled{}, fmt.Errorf("download: %w", err)
	}
	defer out.Close()
	h := sha256.New()
	if have > 0 {
		if err := hashFile(h, part, have); err != nil {
			return pulled{}, err
		}
	}
	bar := p.screen.Bar(label)
	bar.Resumed(have)
	bar.Update(have, max(total, 0))
	n, err := io.Copy(io.MultiWriter(out, h, &barWriter{bar: bar, done: have, total: max(total, 0)}), body)
	got := have + n
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil && total >= 0 && got < total {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		bar.Done("cut off at " + progress.Bytes(got))
		return pulled{}, fmt.Errorf("download cut off at %s (%w): run the same rbee pull again to resume it", progress.Bytes(got), err)
	}
	bar.Done(fmt.Sprintf("%s in %v", progress.Bytes(got), bar.Elapsed().Round(time.Millisecond)))
	sum := h.Sum(nil)
	fail := func(format string, a ...any) (pulled, error) {
		if err := os.Remove(part); err != nil {
			return pulled{}, fmt.Errorf("%s; and removing it: %w", fmt.Sprintf(format, a...), err)
		}
		return pulled{}, fmt.Errorf(format+"; the download is removed", a...)
	}
	switch {
	case total >= 0 && got != total:
		return fail("the download has %d bytes, the server said %d", got, total)
	case want != nil && !bytes.Equal(sum, want):
		return fail("the download's sha256 is %x, want %x", sum, want)
	}
	m, err := gguf.Open(part)
	if err != nil {
		return fail("the download is not a GGUF model: %v", err)
	}
	if err := m.Close(); err != nil {
		return pulled{}, err
	}
	// Rename is atomic: a hive never maps a half-written file.
	if err := os.Rename(part, dest); err != nil {
		return pulled{}, fmt.Errorf("download: %w", err)
	}
	return pulled{size: got, sum: sum}, nil
}

// get asks for rawURL from byte from on (all of it when from is 0).
func (p *puller) get(ctx context.Context, rawURL string, from int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	if from > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", from))
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("download: %w", err)
	}
	return resp, nil
}

// checkRoom refuses a download that would not fit on dir's filesystem.
func (p *puller) checkRoom(dir string, need int64) error {
	free, err := p.free(dir)
	if err != nil {
		return nil // not known here: the write fails if it does not fit
	}
	if need > 0 && uint64(need) > free {
		return fmt.Errorf("the download needs %s and %s has %s free", progress.Bytes(need), dir, progress.Bytes(int64(min(free, 1<<62))))
	}
	return nil
}

// contentRange reads "bytes START-END/SIZE" (or "bytes */SIZE"); a size
// not given is -1.
func contentRange(v string) (start, size int64, err error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	rng, sz, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return 0, 0, fmt.Errorf("Content-Range %q", v)
	}
	size = -1
	if sz != "*" {
		if size, err = strconv.ParseInt(sz, 10, 64); err != nil || size < 0 {
			return 0, 0, fmt.Errorf("Content-Range %q", v)
		}
	}
	if rng == "*" {
		return 0, size, nil
	}
	first, _, _ := strings.Cut(rng, "-")
	if start, err = strconv.ParseInt(first, 10, 64); err != nil || start < 0 {
		return 0, 0, fmt.Errorf("Content-Range %q", v)
	}
	return start, size, nil
}

// hashFile feeds the first n bytes of the file at path to h.
func hashFile(h io.Writer, path string, n int64) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	defer f.Close()
	if _, err := io.CopyN(h, f, n); err != nil {
		return fmt.Errorf("resume: read %s: %w", path, err)
	}
	return nil
}

// barWriter moves a bar as bytes pass.
type barWriter struct {
	bar         *progress.Bar
	done, total int64
}

func (w *barWriter) Write(b []byte) (int, error) {
	w.done += int64(len(b))
	w.bar.Update(w.done, w.total)
	return len(b), nil
}
