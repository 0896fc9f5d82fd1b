// Package gguf reads and writes GGUF files, the model format of ggml and
// llama.cpp (versions 2 and 3, little-endian).
//
// The reader memory-maps the file: metadata is decoded into Go values, but
// tensor data stays in the mapping and is handed out as slices of it, so a
// multi-gigabyte model never passes through the Go heap. Every count and
// offset read from the file is checked against the bytes that remain before
// anything is allocated, so a hostile file gets an error, never a panic or
// an out-of-memory.
package gguf
