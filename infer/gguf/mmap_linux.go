package gguf

import "golang.org/x/sys/unix"

// populate maps every page of the file up front. The engine reads all of a
// model's weights for its first token anyway; faulting them in one by one
// then cost the first prompt of a 134M model about half its speed.
const populate = unix.MAP_POPULATE
