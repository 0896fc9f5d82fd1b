//go:build !unix

package gguf

import (
	"io"
	"os"
)

// Without mmap the file is read whole: correct, but it lands on the heap.
func mapFile(fh *os.File, progress func(done, total int64)) ([]byte, func() error, error) {
	if progress == nil {
		data, err := io.ReadAll(fh)
		if err != nil {
			return nil, nil, err
		}
		return data, func() error { return nil }, nil
	}
	st, err := fh.Stat()
	if err != nil {
		return nil, nil, err
	}
	size := st.Size()
	data := make([]byte, size)
	progress(0, size)
	for off := 0; off < len(data); {
		n, err := io.ReadFull(fh, data[off:min(off+progressChunk, len(data))])
		off += n
		if err != nil {
			return nil, nil, err
		}
		progress(int64(off), size)
	}
	return data, func() error { return nil }, nil
}
