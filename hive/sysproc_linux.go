package hive

import "syscall"

// sysProcAttr puts a worker in its own process group and has the kernel send
// it SIGTERM should the hive die without stopping it (kill -9, a crash).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
