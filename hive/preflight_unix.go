//go:build linux || darwin

package hive

import (
	"fmt"
	"syscall"
)

// DiskFree is the space left to unprivileged writers on dir's filesystem.
func DiskFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
