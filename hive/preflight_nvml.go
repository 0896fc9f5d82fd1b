//go:build nvml && linux && cgo

package hive

import (
	"fmt"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// gpus asks NVML for every GPU's memory. Init opens libnvidia-ml: a
// machine without the driver (or without a GPU) fails there, and has no
// GPU as far as the preflight can tell.
func gpus() ([]GPU, error) {
	if ret := nvml.Init(); ret != nvml.SUCCESS {
		return nil, nil
	}
	defer nvml.Shutdown()
	n, ret := nvml.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, fmt.Errorf("nvml: count devices: %s", nvml.ErrorString(ret))
	}
	out := make([]GPU, 0, n)
	for i := range n {
		d, ret := nvml.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml: device %d: %s", i, nvml.ErrorString(ret))
		}
		mem, ret := d.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			return nil, fmt.Errorf("nvml: device %d memory: %s", i, nvml.ErrorString(ret))
		}
		name, _ := d.GetName()
		out = append(out, GPU{Index: i, Name: name, FreeBytes: mem.Free, TotalBytes: mem.Total})
	}
	return out, nil
}
