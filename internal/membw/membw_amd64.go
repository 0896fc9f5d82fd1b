package membw

import "golang.org/x/sys/cpu"

var useAVX2 = cpu.X86.HasAVX2

// readAVX2 XORs the 64-bit words of p[0:n], n a positive multiple of 256,
// with eight 32-byte loads per iteration.
//
//go:noescape
func readAVX2(p *byte, n int) uint64

func read(b []byte) uint64 {
	if useAVX2 {
		return readAVX2(&b[0], len(b))
	}
	return readGo(b)
}

func kernelName() string {
	if useAVX2 {
		return "avx2"
	}
	return "go"
}
