//go:build unix && !linux

package gguf

import "golang.org/x/sys/unix"

// populate is Linux's MAP_POPULATE; elsewhere pages are mapped on first use.
const populate = 0

// prefault brings b's pages in, asking for them to be read ahead first.
func prefault(b []byte) {
	_ = unix.Madvise(b, unix.MADV_WILLNEED) // only a hint
	touch(b)
}
