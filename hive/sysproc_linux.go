package hive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
)

// procStat reads a process's start time (clock ticks after boot, field 22
// of /proc/<pid>/stat) and whether it is a zombie. The start time tells a
// worker from a later process that got its PID.
func procStat(pid int) (start uint64, zombie bool, err error) {
	start, zombie, _, err = readStat(pid)
	return start, zombie, err
}

// readStat is procStat with the process group (field 5).
func readStat(pid int) (start uint64, zombie bool, pgrp int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	fields := bytes.Fields(b[i+1:])
	const pgrpField, startField = 5 - 3, 22 - 3 // fields after the name start at field 3 (state)
	if len(fields) <= startField {
		return 0, false, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields)+2)
	}
	start, err = strconv.ParseUint(string(fields[startField]), 10, 64)
	if err != nil {
		return 0, false, 0, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	pgrp, err = strconv.Atoi(string(fields[pgrpField]))
	if err != nil {
		return 0, false, 0, fmt.Errorf("/proc/%d/stat: process group: %w", pid, err)
	}
	return start, string(fields[0]) == "Z", pgrp, nil
}

// findByCommandLine looks through /proc for a live process that leads its
// process group (as workers do, Setpgid) and whose command line is the
// one hash was made of (specHash), and returns its PID and start time.
// The command line names the hive and the worker (--hive-id,
// --worker-id), so no other process has it.
func findByCommandLine(hash string) (pid int, start uint64, ok bool) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, false
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		// The arguments, each ended by a NUL; specHash puts a NUL between.
		sum := sha256.Sum256(bytes.TrimSuffix(b, []byte{0}))
		if hex.EncodeToString(sum[:]) != hash {
			continue
		}
		if start, zombie, pgrp, err := readStat(pid); err == nil && !zombie && pgrp == pid {
			return pid, start, true
		}
	}
	return 0, 0, false
}
