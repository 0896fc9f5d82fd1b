package main

import (
	"flag"
	"runtime"
	"time"

	"github.com/rbee-dev/rbee/hive"
)

// placementOptions are the hive flags about what it may start: models it
// loads only on request, the preflight's bounds, and the idle unload.
type placementOptions struct {
	catalog    modelFlags
	maxWorkers *int
	memReserve *int
	diskFree   *int
	idle       *time.Duration
}

func (p *placementOptions) add(fs *flag.FlagSet) {
	fs.Var(&p.catalog, "catalog", "a model the hive loads only when asked (on-demand load, rbee worker spawn): NAME=PATH to a GGUF file (repeatable)")
	p.maxWorkers = fs.Int("max-workers", 0, "most workers running at once (0: no bound)")
	p.memReserve = fs.Int("memory-reserve-mib", hive.DefaultMemoryReserve>>20, "available memory, in MiB, that no worker may take")
	p.diskFree = fs.Int("disk-reserve-mib", hive.DefaultDiskReserve>>20, "free disk space, in MiB, to keep where a model lives")
	p.idle = fs.Duration("idle-timeout", 0, "stop a worker that has had no job this long; a request loads it again (0: never)")
}

// apply sets the options in cfg. Catalog models run as the served ones
// would: the same slots, context, KV pool and threads.
func (p *placementOptions) apply(cfg *hive.Config, o *hiveOptions) {
	threads := *o.threads
	if threads == 0 {
		threads = max(1, runtime.NumCPU()/max(len(cfg.Models)**o.replicas, 1))
	}
	for _, m := range p.catalog {
		m.Slots, m.ContextLength, m.KVTokens, m.Threads = *o.slots, *o.ctx, *o.kvTokens, threads
		cfg.Catalog = append(cfg.Catalog, m)
	}
	cfg.Preflight = hive.Preflight{
		MaxWorkers:    *p.maxWorkers,
		MemoryReserve: uint64(max(*p.memReserve, 0)) << 20,
		DiskReserve:   uint64(max(*p.diskFree, 0)) << 20,
		Estimate:      estimateWorker,
	}
	cfg.IdleTimeout = *p.idle
}
