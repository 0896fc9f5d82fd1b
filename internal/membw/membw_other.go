//go:build !amd64

package membw

func read(b []byte) uint64 { return readGo(b) }

func kernelName() string { return "go" }
