//go:build unix && !linux

package gguf

// populate is Linux's MAP_POPULATE; elsewhere pages are mapped on first use.
const populate = 0
