//go:build nvml && linux && cgo

package hive

import (
	"os"
	"testing"
)

// With the nvml tag the probe reads the real GPUs; without a driver it
// reports none. RBEE_TEST_WANT_GPU=1 (set on a machine with a GPU) makes
// finding none a failure.
func TestNVMLProbe(t *testing.T) {
	gs, err := gpus()
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) == 0 && os.Getenv("RBEE_TEST_WANT_GPU") == "1" {
		t.Fatal("no GPU found, and RBEE_TEST_WANT_GPU=1")
	}
	for _, g := range gs {
		t.Logf("GPU %d %s: %s free of %s", g.Index, g.Name, humanBytes(g.FreeBytes), humanBytes(g.TotalBytes))
		if g.TotalBytes == 0 || g.FreeBytes > g.TotalBytes || g.Name == "" {
			t.Errorf("GPU %+v: want a name and 0 < free <= total", g)
		}
	}
	if free, err := (machine{}).GPUs(); err != nil || len(free) != len(gs) {
		t.Errorf("the machine probe: %v, %v", free, err)
	}
}
