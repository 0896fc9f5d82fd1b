//go:build !linux && !darwin

package hive

import "errors"

// DiskFree is not known here: the preflight skips the disk check.
func DiskFree(string) (uint64, error) {
	return 0, errors.New("free disk space is not known on this system")
}
