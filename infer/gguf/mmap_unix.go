//go:build unix

package gguf

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

func mapFile(fh *os.File, progress func(done, total int64)) ([]byte, func() error, error) {
	st, err := fh.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := st.Size()
	if size == 0 {
		return nil, func() error { return nil }, nil
	}
	if int64(int(size)) != size {
		return nil, nil, fmt.Errorf("file of %d bytes is too large to map", size)
	}
	flags := unix.MAP_SHARED
	if progress == nil {
		flags |= populate
	}
	data, err := unix.Mmap(int(fh.Fd()), 0, int(size), unix.PROT_READ, flags)
	if err != nil {
		return nil, nil, err
	}
	if progress != nil {
		// The pages come in a chunk at a time, as MAP_POPULATE would have
		// brought them all.
		progress(0, size)
		for off := 0; off < len(data); off += progressChunk {
			end := min(off+progressChunk, len(data))
			prefault(data[off:end])
			progress(int64(end), size)
		}
	}
	return data, func() error { return unix.Munmap(data) }, nil
}

// touch reads a byte of every page of b, which faults them in.
func touch(b []byte) {
	page := os.Getpagesize()
	var x byte
	for i := 0; i < len(b); i += page {
		x ^= b[i]
	}
	runtime.KeepAlive(x) // the reads are the point
}
