package gguf

import "golang.org/x/sys/unix"

// populate maps every page of the file up front. The engine reads all of a
// model's weights for its first token anyway; faulting them in one by one
// then cost the first prompt of a 134M model about half its speed.
const populate = unix.MAP_POPULATE

// prefault brings b's pages in as populate does; kernels before 5.14 lack
// MADV_POPULATE_READ, and get b's pages read one by one.
func prefault(b []byte) {
	if unix.Madvise(b, unix.MADV_POPULATE_READ) != nil {
		touch(b)
	}
}
