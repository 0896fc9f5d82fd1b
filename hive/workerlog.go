package hive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Defaults of the worker logs.
const (
	// DefaultWorkerLogMax is the size past which a worker's log file is
	// emptied once the hive has read it all.
	DefaultWorkerLogMax = 16 << 20
	// defaultLogPoll is how often the hive looks for new lines in a
	// worker's log file.
	defaultLogPoll = 200 * time.Millisecond
	// maxLogLine bounds a line held while its end has not been written: a
	// longer one is logged in pieces.
	maxLogLine = 64 << 10
)

// workerLogDir holds a log file per worker, in the hive's data directory.
const workerLogDir = "workers"

// workerLogPath is the log file of worker id: stdout and stderr of each of
// its processes.
func workerLogPath(dataDir, id string) string {
	return filepath.Join(dataDir, workerLogDir, id+".log")
}

// createWorkerLog creates the log file a new process of worker id writes
// to. The child gets the file itself, not a pipe: a worker whose hive died
// writes on, where a pipe would fail it with EPIPE or SIGPIPE. O_APPEND
// keeps its writes at the end when the hive truncates the file. The file
// of an earlier process is unlinked first, so that one still draining (a
// process replaced for its command line) writes on to its own file, not
// into the new process's lines.
func createWorkerLog(dataDir, id string) (*os.File, error) {
	path := workerLogPath(dataDir, id)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("worker log directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("worker log: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("worker log: %w", err)
	}
	return f, nil
}

// logFollower re-emits the lines a worker process writes to its log file
// through the hive's logger, polling the file, until stopped.
type logFollower struct {
	f       *os.File
	out     *slog.Logger // the worker's lines: with its ID, model and PID
	log     *slog.Logger // the follower's own, as the hive's
	max     int64
	off     int64  // read up to here
	partial []byte // the start of a line whose end is not written yet
	buf     []byte // for reads, made at the first
	stop    chan struct{}
	done    chan struct{}
}

// followWorkerLog follows the log file at path from offset from (-1: its
// end, for a process that wrote before this hive was there) into log,
// where each line says component=worker.
func followWorkerLog(path string, from int64, log *slog.Logger, maxSize int64, every time.Duration) (*logFollower, error) {
	// Written to only by Truncate: reads go through ReadAt.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("follow worker log: %w", err)
	}
	if from < 0 {
		fi, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("follow worker log: %w", err)
		}
		from = fi.Size()
	}
	l := &logFollower{f: f, out: log, log: log.With("component", "hive"), max: maxSize, off: from, stop: make(chan struct{}), done: make(chan struct{})}
	go l.run(every)
	return l, nil
}

func (l *logFollower) run(every time.Duration) {
	defer close(l.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			// The process is gone: what it wrote last (a panic's trace)
			// is read now, an unfinished line included.
			l.read(true)
			if err := l.f.Close(); err != nil {
				l.log.Warn("close worker log", "err", err)
			}
			return
		case <-t.C:
			l.read(false)
		}
	}
}

// close stops following, once the lines written so far are logged. It is
// safe on a nil follower.
func (l *logFollower) close() {
	if l == nil {
		return
	}
	close(l.stop)
	<-l.done
}

// read logs the complete lines written since the last read (every line
// when final), and empties a file past its cap that has been read to its
// end.
func (l *logFollower) read(final bool) {
	fi, err := l.f.Stat()
	if err != nil {
		l.log.Warn("read worker log", "err", err)
		return
	}
	if fi.Size() < l.off {
		// Emptied by another reader (an earlier hive's follower of the
		// same process): start again at its beginning.
		l.off, l.partial = 0, nil
	}
	if l.buf == nil && l.off < fi.Size() {
		l.buf = make([]byte, 32<<10)
	}
	for l.off < fi.Size() {
		n, err := l.f.ReadAt(l.buf[:min(int64(len(l.buf)), fi.Size()-l.off)], l.off)
		l.off += int64(n)
		l.lines(l.buf[:n])
		if err != nil && !errors.Is(err, io.EOF) {
			l.log.Warn("read worker log", "err", err)
			return
		}
		if n == 0 {
			break
		}
	}
	if final && len(l.partial) > 0 {
		l.emit(l.partial)
		l.partial = nil
	}
	if l.max <= 0 || l.off <= l.max {
		return
	}
	// Caught up, the file is emptied, and the worker's O_APPEND writes go
	// on at its new end. What it writes between this Stat and the
	// truncation is lost: a window of microseconds once per l.max bytes.
	if fi, err := l.f.Stat(); err != nil || fi.Size() != l.off {
		return // more to read first
	}
	if err := l.f.Truncate(0); err != nil {
		l.log.Warn("truncate worker log", "err", err)
		return
	}
	l.off = 0
}

// lines logs each complete line of b, keeping an unfinished last one.
func (l *logFollower) lines(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			l.partial = append(l.partial, b...)
			if len(l.partial) >= maxLogLine {
				l.emit(l.partial)
				l.partial = nil
			}
			return
		}
		line := b[:i]
		if len(l.partial) > 0 {
			line = append(l.partial, line...)
			l.partial = nil
		}
		l.emit(line)
		b = b[i+1:]
	}
}

// emit logs one line: a JSON slog line at its own level, time and message
// with its attributes, anything else (a Go panic's trace) as it is at
// ERROR, since a crash's last words must show in the hive's log.
func (l *logFollower) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(bytes.TrimSpace(line)) == 0 {
		return
	}
	r, ok := parseLogLine(line)
	if !ok {
		r = slog.NewRecord(time.Now(), slog.LevelError, string(line), 0)
	}
	if !hasAttr(r, "component") {
		r.AddAttrs(slog.String("component", "worker"))
	}
	ctx := context.Background()
	if h := l.out.Handler(); h.Enabled(ctx, r.Level) {
		_ = h.Handle(ctx, r)
	}
}

func hasAttr(r slog.Record, key string) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		found = a.Key == key
		return !found
	})
	return found
}

// ownAttrs are what the hive's logger says of the worker itself; the
// worker's copies are dropped, not repeated.
var ownAttrs = map[string]bool{"worker_id": true, "model": true, "pid": true, "hive_id": true}

// parseLogLine reads a line of slog's JSON handler: an object with time,
// level and msg, and attributes, in order, groups as groups.
func parseLogLine(line []byte) (slog.Record, bool) {
	if len(line) == 0 || line[0] != '{' {
		return slog.Record{}, false
	}
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return slog.Record{}, false
	}
	attrs, err := decodeAttrs(d)
	if err != nil {
		return slog.Record{}, false
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return slog.Record{}, false // more after the object
	}
	var (
		at       = time.Now()
		level    slog.Level
		msg      string
		hasLevel bool
		hasMsg   bool
		kept     = attrs[:0]
	)
	for _, a := range attrs {
		switch {
		case a.Key == slog.TimeKey && a.Value.Kind() == slog.KindString:
			if t, err := time.Parse(time.RFC3339Nano, a.Value.String()); err == nil {
				at = t
			}
		case a.Key == slog.LevelKey && a.Value.Kind() == slog.KindString:
			hasLevel = level.UnmarshalText([]byte(a.Value.String())) == nil
		case a.Key == slog.MessageKey && a.Value.Kind() == slog.KindString:
			msg, hasMsg = a.Value.String(), true
		case ownAttrs[a.Key]:
		default:
			kept = append(kept, a)
		}
	}
	if !hasLevel || !hasMsg {
		return slog.Record{}, false
	}
	r := slog.NewRecord(at, level, msg, 0)
	r.AddAttrs(kept...)
	return r, true
}

// decodeAttrs reads an object's members after its '{', and its '}'.
func decodeAttrs(d *json.Decoder) ([]slog.Attr, error) {
	var attrs []slog.Attr
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("object key is not a string")
		}
		v, err := decodeValue(d)
		if err != nil {
			return nil, err
		}
		attrs = append(attrs, slog.Attr{Key: key, Value: v})
	}
	_, err := d.Token() // '}'
	return attrs, err
}

func decodeValue(d *json.Decoder) (slog.Value, error) {
	tok, err := d.Token()
	if err != nil {
		return slog.Value{}, err
	}
	switch t := tok.(type) {
	case json.Delim:
		if t == '{' {
			attrs, err := decodeAttrs(d)
			return slog.GroupValue(attrs...), err
		}
		var items []any
		for d.More() {
			v, err := decodeValue(d)
			if err != nil {
				return slog.Value{}, err
			}
			items = append(items, plain(v))
		}
		_, err := d.Token() // ']'
		return slog.AnyValue(items), err
	case string:
		return slog.StringValue(t), nil
	case json.Number:
		if n, err := t.Int64(); err == nil {
			return slog.Int64Value(n), nil
		}
		f, err := t.Float64()
		return slog.Float64Value(f), err
	case bool:
		return slog.BoolValue(t), nil
	}
	return slog.AnyValue(nil), nil
}

// plain is v as a JSON value, for an array's items: groups become maps.
func plain(v slog.Value) any {
	if v.Kind() != slog.KindGroup {
		return v.Any()
	}
	m := map[string]any{}
	for _, a := range v.Group() {
		m[a.Key] = plain(a.Value)
	}
	return m
}
