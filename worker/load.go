package worker

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/infer"
	"github.com/rbee-dev/rbee/schemas"
)

// LoadStats are what a worker's ready message tells of its model's load
// (Config.Load).
type LoadStats struct {
	Bytes int64         // the model file's size
	Took  time.Duration // how long the load took
}

// LoadModel loads the model at path for the worker cfg describes, telling
// the bus how far it has got on Subjects.Progress(KindWorker, cfg.ID):
// loading messages while the file is read in (at most about ten a second),
// or one failed message, flushed before LoadModel returns, when the model
// cannot be loaded. opts.Progress, when set, is told too. The ready message
// is Run's, once the worker takes jobs.
func LoadModel(nc *nats.Conn, cfg Config, path string, opts infer.Options) (*infer.Model, LoadStats, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, LoadStats{}, fmt.Errorf("worker config: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := progressPublisher{nc: nc, cfg: cfg, log: log.With("worker_id", cfg.ID, "model", cfg.Model)}
	local := opts.Progress
	var total int64
	opts.Progress = func(lp infer.LoadProgress) {
		total = lp.Total
		p.publish(schemas.WorkerProgress{Phase: schemas.LoadLoading, DoneBytes: lp.Done, TotalBytes: lp.Total})
		if local != nil {
			local(lp)
		}
	}
	start := time.Now()
	m, err := infer.Load(path, opts)
	if err != nil {
		if total == 0 {
			if st, serr := os.Stat(path); serr == nil {
				total = st.Size()
			}
		}
		p.publish(schemas.WorkerProgress{Phase: schemas.LoadFailed, TotalBytes: total,
			Error: schemas.Errorf(schemas.CodeEngineFailure, "the model cannot be loaded: %v", err)})
		// The process is about to exit: the failure must leave first.
		if ferr := nc.FlushTimeout(busTimeout); ferr != nil {
			p.log.Warn("flush the failed load's progress", "err", ferr)
		}
		return nil, LoadStats{}, err
	}
	return m, LoadStats{Bytes: total, Took: time.Since(start)}, nil
}

// progressPublisher publishes one worker's load progress.
type progressPublisher struct {
	nc     *nats.Conn
	cfg    Config
	log    *slog.Logger
	warned bool
}

func (p *progressPublisher) publish(msg schemas.WorkerProgress) {
	msg.WorkerID, msg.HiveID, msg.Model, msg.Time = p.cfg.ID, p.cfg.HiveID, p.cfg.Model, time.Now().UTC()
	data, err := json.Marshal(msg)
	if err == nil {
		err = p.nc.Publish(p.cfg.Subjects.Progress(schemas.KindWorker, p.cfg.ID), data)
	}
	// Progress is for people watching: a lost message costs nothing, and
	// one warning says it all.
	if err != nil && !p.warned {
		p.warned = true
		p.log.Warn("publish load progress", "err", err)
	}
}
