package hive

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseLogLine(t *testing.T) {
	for _, tc := range []struct {
		line  string
		level slog.Level
		msg   string
		attrs string // "" with msg "": not a slog line
	}{
		{`{"time":"2026-01-02T03:04:05.5Z","level":"INFO","msg":"hi","a":1,"b":"x"}`, slog.LevelInfo, "hi", "[a=1 b=x]"},
		{`{"level":"WARN+2","msg":"m","g":{"x":1.5,"y":[1,"a",{"z":true}]},"worker_id":"w","pid":7}`, slog.LevelWarn + 2, "m", "[g=[x=1.5 y=[1 a map[z:true]]]]"},
		{`{"level":"ERROR","msg":"m","big":12345678901234567890,"nil":null,"ok":false}`, slog.LevelError, "m", "[big=1.2345678901234567e+19 nil=<nil> ok=false]"},
		{`{"level":"INFO","msg":"m"} and more`, 0, "", ""},
		{`{"level":"INFO","msg":"m"`, 0, "", ""},
		{`{"msg":"no level"}`, 0, "", ""},
		{`{"level":"LOUD","msg":"m"}`, 0, "", ""},
		{`{"level":"INFO","msg":3}`, 0, "", ""},
		{`["level","INFO"]`, 0, "", ""},
		{`panic: runtime error`, 0, "", ""},
	} {
		r, ok := parseLogLine([]byte(tc.line))
		if ok != (tc.msg != "") {
			t.Errorf("%s: ok %v", tc.line, ok)
			continue
		}
		if !ok {
			continue
		}
		var attrs []string
		r.Attrs(func(a slog.Attr) bool {
			attrs = append(attrs, a.String())
			return true
		})
		if got := fmt.Sprint(attrs); r.Level != tc.level || r.Message != tc.msg || got != tc.attrs {
			t.Errorf("%s: %v %q %s, want %v %q %s", tc.line, r.Level, r.Message, got, tc.level, tc.msg, tc.attrs)
		}
	}
	r, _ := parseLogLine([]byte(`{"time":"2026-01-02T03:04:05.5Z","level":"INFO","msg":"hi"}`))
	if want := time.Date(2026, 1, 2, 3, 4, 5, 5e8, time.UTC); !r.Time.Equal(want) {
		t.Errorf("time %v, want the line's %v", r.Time, want)
	}
}

// The follower logs each line once it is whole, empties a file past its
// cap once it has read it all, and logs what is left when it stops.
func TestLogFollower(t *testing.T) {
	dir := t.TempDir()
	w, err := createWorkerLog(dir, "w1")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	path := workerLogPath(dir, "w1")
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log file %v (%v), want mode 0600", fi.Mode(), err)
	}
	write := func(s string) {
		t.Helper()
		if _, err := w.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	rec := &recorder{}
	l, err := followWorkerLog(path, 0, slog.New(rec).With("worker_id", "w1"), 100, 5*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			l.close()
		}
	}()
	logged := func(msg string, n int) {
		t.Helper()
		checkFor(t, waitFor, func() error {
			if got := len(rec.find(msg)); got != n {
				return fmt.Errorf("%d records %.20q, want %d", got, msg, n)
			}
			return nil
		})
	}

	write(`{"level":"INFO","msg":"one"}` + "\ntwo\nthr")
	logged("one", 1)
	logged("two", 1)
	if one, two := rec.find("one")[0], rec.find("two")[0]; one.level != slog.LevelInfo || two.level != slog.LevelError ||
		one.attrs["worker_id"].String() != "w1" || two.attrs["worker_id"].String() != "w1" {
		t.Errorf("records %+v and %+v, want INFO and ERROR, of w1", one, two)
	}
	write("ee\n")
	logged("three", 1)
	if n := len(rec.find("thr")); n != 0 {
		t.Errorf("the unfinished line was logged %d times", n)
	}

	long := strings.Repeat("x", 120)
	write(long + "\n") // past the cap of 100 bytes
	logged(long, 1)
	checkFor(t, waitFor, func() error {
		if fi, err := os.Stat(path); err != nil || fi.Size() != 0 {
			return fmt.Errorf("log file %v bytes (%v), want emptied", fi.Size(), err)
		}
		return nil
	})
	// The writer's O_APPEND puts this at the emptied file's start.
	write("after\n")
	logged("after", 1)
	if b, err := os.ReadFile(path); err != nil || string(b) != "after\n" {
		t.Errorf("log file holds %q (%v), want only the line written after it was emptied", b, err)
	}

	huge := strings.Repeat("y", maxLogLine)
	write(huge + "zz")
	logged(huge, 1)
	write("last words")
	l.close()
	stopped = true
	for _, msg := range []string{"zzlast words", "after", long} {
		if got := rec.find(msg); len(got) != 1 || got[0].level != slog.LevelError {
			t.Errorf("%.20q: %d records %+v, want one at ERROR", msg, len(got), got)
		}
	}
}
