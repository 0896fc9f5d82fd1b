//go:build unix && !linux

package hive

import "syscall"

// sysProcAttr puts a worker in its own process group. Only Linux can tie a
// child's life to its parent's; elsewhere a hive that is killed hard leaves
// its workers running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
