package hive

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rbee-dev/rbee/internal/progress"
	"github.com/rbee-dev/rbee/schemas"
)

// Defaults of the preflight.
const (
	// DefaultMemoryReserve is the available memory workers leave to the
	// rest of the machine.
	DefaultMemoryReserve = 256 << 20
	// DefaultDiskReserve is the disk space left free where the model lives.
	DefaultDiskReserve = 64 << 20
)

// Resources probes what the machine has free now. The hive's preflight
// reads it before every start; tests give their own.
type Resources interface {
	// MemoryAvailable is the memory new processes can have without the
	// machine swapping (Linux: MemAvailable).
	MemoryAvailable() (uint64, error)
	// DiskFree is the space an unprivileged process can still write on the
	// filesystem holding dir.
	DiskFree(dir string) (uint64, error)
	// GPUs describes each GPU; a machine without one (or without a driver)
	// has none, and no error.
	GPUs() ([]GPU, error)
}

// GPU is one accelerator as the probe sees it.
type GPU struct {
	Index      int
	Name       string
	FreeBytes  uint64
	TotalBytes uint64
}

// Need is what one worker of a model takes: memory for its weights and KV
// pool, GPU memory (0 for the CPU engine), and disk the model needs beyond
// what its file already holds.
type Need struct {
	RAM, VRAM, Disk uint64
}

// Preflight bounds what the hive starts.
type Preflight struct {
	// MemoryReserve is the available memory no worker may take; default
	// DefaultMemoryReserve.
	MemoryReserve uint64
	// DiskReserve is the free disk space to keep where the model lives;
	// default DefaultDiskReserve.
	DiskReserve uint64
	// MaxWorkers bounds the workers running at once; 0: no bound.
	MaxWorkers int
	// Resources probes the machine; nil: this one (/proc/meminfo, statfs,
	// and NVML for GPUs in a build with the nvml tag).
	Resources Resources
	// Estimate says what a worker of a model needs; nil: its file's size in
	// memory and nothing else. rbee's commands read the GGUF header for the
	// KV pool (the hive does not import the engine).
	Estimate func(ModelSpec) (Need, error)
}

func (p Preflight) withDefaults() (Preflight, error) {
	if p.MaxWorkers < 0 {
		return p, fmt.Errorf("preflight: max workers %d is negative", p.MaxWorkers)
	}
	if p.MemoryReserve == 0 {
		p.MemoryReserve = DefaultMemoryReserve
	}
	if p.DiskReserve == 0 {
		p.DiskReserve = DefaultDiskReserve
	}
	if p.Resources == nil {
		p.Resources = machine{}
	}
	if p.Estimate == nil {
		p.Estimate = fileSize
	}
	return p, nil
}

// fileSize is the estimate of a worker that maps its model and little more.
func fileSize(m ModelSpec) (Need, error) {
	fi, err := os.Stat(m.Path)
	if err != nil {
		return Need{}, fmt.Errorf("model %s: %w", m.Name, err)
	}
	return Need{RAM: uint64(fi.Size())}, nil
}

// preflight checks that worker id of m fits on the machine next to the
// other workers, and says why not with the code of what is short. A probe
// that fails does not stop the start (a machine without /proc/meminfo,
// say): it is logged and its check skipped. h.mu is held.
func (h *Hive) preflight(m ModelSpec, id string) error {
	pf := h.cfg.Preflight
	if pf.MaxWorkers > 0 {
		n := 0
		for wid, p := range h.procs {
			// A worker being restarted holds its place already.
			if p.running() && wid != id {
				n++
			}
		}
		if n >= pf.MaxWorkers {
			return schemas.Errorf(schemas.CodeTooManyWorkers, "hive %s runs %d workers, its maximum", h.cfg.ID, n)
		}
	}
	need, err := pf.Estimate(m)
	if err != nil {
		return schemas.Wrap(schemas.CodeInvalidRequest, fmt.Errorf("estimate what model %s needs: %w", m.Name, err))
	}
	dir := filepath.Dir(m.Path)
	if free, err := pf.Resources.DiskFree(dir); err != nil {
		h.log.Warn("preflight: disk probe failed; not checking disk", "model", m.Name, "err", err)
	} else if free < need.Disk+pf.DiskReserve {
		return schemas.Errorf(schemas.CodeInsufficientDisk,
			"model %s needs %s of disk in %s and %s kept free; %s is free", m.Name, humanBytes(need.Disk), dir, humanBytes(pf.DiskReserve), humanBytes(free))
	}
	if avail, err := pf.Resources.MemoryAvailable(); err != nil {
		h.log.Warn("preflight: memory probe failed; not checking memory", "model", m.Name, "err", err)
	} else if avail < need.RAM+pf.MemoryReserve {
		return schemas.Errorf(schemas.CodeInsufficientRAM,
			"a worker of %s needs %s of memory and %s is kept in reserve; %s is available", m.Name, humanBytes(need.RAM), humanBytes(pf.MemoryReserve), humanBytes(avail))
	}
	if need.VRAM == 0 {
		return nil
	}
	gpus, err := pf.Resources.GPUs()
	if err != nil {
		return schemas.Wrap(schemas.CodeInsufficientVRAM, fmt.Errorf("model %s needs %s of GPU memory and the GPU probe failed: %w", m.Name, humanBytes(need.VRAM), err))
	}
	var most uint64
	for _, g := range gpus {
		most = max(most, g.FreeBytes)
	}
	if most < need.VRAM {
		return schemas.Errorf(schemas.CodeInsufficientVRAM,
			"model %s needs %s of GPU memory; the most any of %d GPUs has free is %s", m.Name, humanBytes(need.VRAM), len(gpus), humanBytes(most))
	}
	return nil
}

// humanBytes prints a size for a person, as the CLI's progress does.
func humanBytes(n uint64) string { return progress.Bytes(int64(min(n, math.MaxInt64))) }

// machine probes this machine.
type machine struct{}

func (machine) MemoryAvailable() (uint64, error) {
	total, avail, err := memory()
	if err == nil && total == 0 {
		err = errors.New("memory size unknown on this system")
	}
	return avail, err
}

func (machine) DiskFree(dir string) (uint64, error) { return DiskFree(dir) }

func (machine) GPUs() ([]GPU, error) { return gpus() }

// placementMetrics count what the preflight and the lifecycle decided.
type placementMetrics struct {
	rejected  *prometheus.CounterVec // code
	evictions prometheus.Counter
	unloads   prometheus.Counter
}

func newPlacementMetrics(reg prometheus.Registerer) (*placementMetrics, error) {
	m := &placementMetrics{
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "spawn_rejected_total",
			Help: "Worker starts the preflight refused, by code.",
		}, []string{"code"}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "workers_evicted_total",
			Help: "Idle workers stopped to make memory for another model.",
		}),
		unloads: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "rbee", Subsystem: "hive", Name: "workers_unloaded_idle_total",
			Help: "Workers stopped after the idle timeout.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.rejected, m.evictions, m.unloads} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register: %w", err)
		}
	}
	return m, nil
}
