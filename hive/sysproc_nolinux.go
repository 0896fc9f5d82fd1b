//go:build !linux

package hive

import "errors"

// procStat needs /proc. Without it no process can be told from one that
// reused its PID, so a restarted hive adopts nothing and starts anew.
func procStat(int) (uint64, bool, error) {
	return 0, false, errors.New("process start times need Linux /proc")
}

// findByCommandLine needs /proc too: it finds nothing.
func findByCommandLine(string) (int, uint64, bool) { return 0, 0, false }
