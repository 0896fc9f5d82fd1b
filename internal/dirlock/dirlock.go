// Package dirlock keeps a directory for one process at a time: a hive's data
// directory, the JetStream directory of `rbee up`. The lock is an flock on a
// file in the directory, so the kernel drops it when its holder dies, however
// it dies; the file also names the holder's PID, for the message that tells
// the second process who is in the way.
package dirlock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FileName is the lock file inside a locked directory.
const FileName = "rbee.lock"

// HeldError says that another process holds a directory.
type HeldError struct {
	Dir string
	PID int // 0 when the lock file does not name one
}

func (e *HeldError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("directory %s is in use by another process (lock %s)", e.Dir, filepath.Join(e.Dir, FileName))
	}
	return fmt.Sprintf("directory %s is in use by process %d (lock %s)", e.Dir, e.PID, filepath.Join(e.Dir, FileName))
}

// ErrHeld matches every HeldError with errors.Is.
var ErrHeld = errors.New("directory is locked by another process")

// Is makes errors.Is(err, ErrHeld) true for a HeldError.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Lock is a held directory lock.
type Lock struct {
	f   *os.File
	dir string
}

// Acquire creates dir if needed and locks it without waiting. A directory
// another process (or another Lock in this one) holds gives a *HeldError.
func Acquire(dir string) (*Lock, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	// os.OpenFile sets O_CLOEXEC: processes started later (workers) do
	// not inherit the lock and cannot keep it after this process is gone.
	f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	if held {
		pid := readPID(f)
		f.Close()
		return nil, &HeldError{Dir: dir, PID: pid}
	}
	if err := writePID(f); err != nil {
		unlock(f)
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	return &Lock{f: f, dir: dir}, nil
}

// Dir is the locked directory.
func (l *Lock) Dir() string { return l.dir }

// Release unlocks the directory. The lock file stays: removing it would let
// a process that opened it just before lock a file nobody else sees.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := errors.Join(l.f.Truncate(0), unlock(l.f), l.f.Close())
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlock %s: %w", l.dir, err)
	}
	return nil
}

func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return err
	}
	return f.Sync()
}

func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0) // a short or empty file only means no PID to name
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
