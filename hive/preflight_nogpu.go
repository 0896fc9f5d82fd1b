//go:build !(nvml && linux && cgo)

package hive

// gpus reports none: this build has no NVML probe (build with -tags nvml
// for one), and the CPU engine needs no GPU memory.
func gpus() ([]GPU, error) { return nil, nil }
