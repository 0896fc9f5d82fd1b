//go:build unix

package hive

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A worker's output reaches the hive's log, attributed: its slog lines at
// their own level and time with their attributes, other lines at ERROR,
// an unfinished last line once the process is gone, each with the
// worker's component, once. A new process of the worker starts a new file.
func TestWorkerOutputIsInTheHiveLog(t *testing.T) {
	dataDir := t.TempDir()
	f := newRealHive(t, "log", func(c *Config) { c.DataDir = dataDir })
	f.run()
	const id = "test-hive-tiny_1b-0"
	pid := f.waitReady(1)[0]
	checkFor(t, waitFor, func() error {
		if len(f.log.find("model is large")) != 1 || len(f.log.find("panic: not really")) != 1 || len(f.log.find("at its own time")) != 1 {
			return errors.New("the worker's lines are not all logged yet")
		}
		return nil
	})
	attributed := func(r record, level slog.Level, pid int) {
		t.Helper()
		a := r.attrs
		if r.level != level || a["worker_id"].String() != id || a["model"].String() != "tiny:1b" || a["pid"].Int64() != int64(pid) || a["hive_id"].String() != "test-hive" {
			t.Errorf("%q: level %v, attributes %v; want %v, of worker %s pid %d on test-hive", r.msg, r.level, a, level, id, pid)
		}
		if a["component"].String() != "worker" || len(r.twice) > 0 {
			t.Errorf("%q: component %q, keys given twice %q; want worker, once", r.msg, a["component"], r.twice)
		}
	}
	if started := f.log.find("worker started"); len(started) == 0 || started[0].attrs["component"].String() != "hive" || len(started[0].twice) > 0 {
		t.Errorf("the hive's own line %+v, want component hive, once", started)
	}
	warn := f.log.find("model is large")[0]
	attributed(warn, slog.LevelWarn, pid)
	a := warn.attrs
	if a["slots"].Int64() != 4 || a["ratio"].Float64() != 0.5 || !a["ok"].Bool() || a["engine"].String() != "[threads=2 simd=avx2]" || fmt.Sprint(a["ctx"].Any()) != "[1 2]" {
		t.Errorf("the worker's attributes came as %v", a)
	}
	own := f.log.find("at its own time")[0]
	attributed(own, slog.LevelDebug+2, pid)
	if want := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC); !own.time.Equal(want) {
		t.Errorf("record time %v, want the line's %v", own.time, want)
	}
	attributed(f.log.find("panic: not really")[0], slog.LevelError, pid)
	if n := len(f.log.find("unfinished")); n != 0 {
		t.Errorf("a line without its end logged %d times while its writer runs", n)
	}
	path := workerLogPath(dataDir, id)
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("worker log %s: %v, %v; want mode 0600", path, fi.Mode(), err)
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var next int
	checkFor(t, waitFor, func() error {
		recs := f.log.find("model is large")
		if len(recs) != 2 {
			return fmt.Errorf("%d records of the line, want one from each process", len(recs))
		}
		next = int(recs[1].attrs["pid"].Int64())
		return nil
	})
	if next == pid {
		t.Fatalf("the restarted worker's line came from pid %d, the killed one", pid)
	}
	if un := f.log.find("unfinished"); len(un) != 1 {
		t.Errorf("the killed process's unfinished line logged %d times, want once", len(un))
	} else {
		attributed(un[0], slog.LevelError, pid)
	}
	checkFor(t, waitFor, func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "panic: not really") {
			return errors.New("the new process has not written yet")
		}
		if n := strings.Count(string(b), "model is large"); n != 1 {
			return fmt.Errorf("the log file holds the line %d times, want only the new process's", n)
		}
		return nil
	})
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, f.started())
}
