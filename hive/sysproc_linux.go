package hive

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// procStat reads a process's start time (clock ticks after boot, field 22
// of /proc/<pid>/stat) and whether it is a zombie. The start time tells a
// worker from a later process that got its PID.
func procStat(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := bytes.Fields(b[i+1:])
	const startField = 22 - 3 // fields after the name start at field 3 (state)
	if len(fields) <= startField {
		return 0, false, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	start, err = strconv.ParseUint(string(fields[startField]), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return start, string(fields[0]) == "Z", nil
}
