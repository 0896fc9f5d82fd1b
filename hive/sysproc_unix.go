//go:build unix

package hive

import "syscall"

// sysProcAttr puts a worker in its own process group, so that stopping it
// reaches anything it started. Nothing ties its life to the hive's: a hive
// that dies leaves its workers serving, and the next hive adopts them.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
