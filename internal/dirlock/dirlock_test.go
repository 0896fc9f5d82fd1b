package dirlock_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/dirlock"
)

// envHold makes the test binary a child that takes the lock on the named
// directory, says so on stdout and waits for its stdin to close.
const envHold = "DIRLOCK_TEST_HOLD"

func TestMain(m *testing.M) {
	if dir := os.Getenv(envHold); dir != "" {
		l, err := dirlock.Acquire(dir)
		if err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Stdout.WriteString("locked\n")
		_, _ = os.Stdin.Read(make([]byte, 1))
		_ = l.Release()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSecondLockInProcessIsRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	l, err := dirlock.Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = dirlock.Acquire(dir)
	var held *dirlock.HeldError
	if !errors.As(err, &held) || !errors.Is(err, dirlock.ErrHeld) {
		t.Fatalf("second Acquire: %v, want a HeldError", err)
	}
	if held.PID != os.Getpid() || !strings.Contains(err.Error(), "in use by process "+strconv.Itoa(os.Getpid())) {
		t.Errorf("error %q names pid %d, want %d", err, held.PID, os.Getpid())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := dirlock.Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	if err := l2.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestLockHeldByAnotherProcessNamesIt(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envHold+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 7)
	if _, err := stdout.Read(line); err != nil || string(line) != "locked\n" {
		t.Fatalf("child said %q (%v)", line, err)
	}
	_, err = dirlock.Acquire(dir)
	var held *dirlock.HeldError
	if !errors.As(err, &held) || held.PID != cmd.Process.Pid {
		t.Errorf("Acquire while the child holds it: %v, want a HeldError naming pid %d", err, cmd.Process.Pid)
	}
	// Killed, the child cannot release: the kernel drops its lock.
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	_ = cmd.Wait()
	l, err := dirlock.Acquire(dir)
	if err != nil {
		t.Fatalf("Acquire after the holder died: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
}
