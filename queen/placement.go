package queen

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// placeTimeout bounds one hive's answer to an on-demand spawn; its
// preflight takes milliseconds.
const placeTimeout = 3 * time.Second

// place asks a hive to load model for a request no live worker can take
// (on-demand load): the live, non-draining hive with the most free memory
// first, then the others, until one takes it. The job is then queued as
// any other and waits on the work queue, within its deadline, for the
// worker to start. Every hive refusing (preflight codes, no answer) is
// no_capacity naming them and why.
func (q *Queen) place(ctx context.Context, model string, hives []schemas.HiveHeartbeat) error {
	hives = slices.Clone(hives)
	slices.SortStableFunc(hives, func(a, b schemas.HiveHeartbeat) int {
		if a.Draining != b.Draining {
			if a.Draining {
				return 1
			}
			return -1
		}
		return cmp.Compare(b.FreeBytes, a.FreeBytes)
	})
	hc := bus.NewHiveClient(q.nc, q.cfg.Subjects)
	var refusals []string
	for _, h := range hives {
		if h.Draining {
			refusals = append(refusals, h.HiveID+": draining")
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, placeTimeout)
		reply, err := hc.Spawn(pctx, h.HiveID, schemas.SpawnRequest{Model: model, OnDemand: true})
		cancel()
		if err == nil {
			q.log.Info("model placed on a hive", "model", model, "hive_id", h.HiveID, "worker_id", reply.WorkerID, "started", reply.Started)
			return nil
		}
		q.log.Info("hive refused an on-demand load", "model", model, "hive_id", h.HiveID, "err", err)
		refusals = append(refusals, h.HiveID+": "+err.Error())
		if ctx.Err() != nil {
			break
		}
	}
	return schemas.Errorf(schemas.CodeNoCapacity, "no live worker of model %q, and no hive would start one (%s)", model, strings.Join(refusals, "; "))
}

// Model statuses in /v1/models beyond a loaded model's (no status).
const (
	modelNotLoaded = "not_loaded" // a live hive can start it on demand
	modelFailed    = "failed"     // a hive gave up on its workers
)

// models lists the models live workers serve, then those a live hive
// knows but runs no worker of, then those whose workers failed, each once.
func (q *Queen) models(ctx context.Context, workers []schemas.WorkerHeartbeat) []modelInfo {
	status := map[string]string{}
	for _, w := range workers {
		status[w.Model] = ""
	}
	hives, err := q.liveHives(ctx)
	if err != nil {
		q.log.Debug("read the hives bucket for the models list", "err", err)
	}
	for _, h := range hives {
		for _, m := range h.Models {
			if _, ok := status[m]; !ok {
				status[m] = modelNotLoaded
			}
		}
		for _, f := range h.Failed {
			if s := status[f.Model]; s == modelNotLoaded {
				status[f.Model] = modelFailed
			}
		}
	}
	out := make([]modelInfo, 0, len(status))
	for id, s := range status {
		out = append(out, modelInfo{ID: id, Object: "model", Created: q.started.Unix(), OwnedBy: "rbee", Status: s})
	}
	slices.SortFunc(out, func(a, b modelInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// liveHives reads the hives bucket.
func (q *Queen) liveHives(ctx context.Context) ([]schemas.HiveHeartbeat, error) {
	kv, err := q.js.KeyValue(ctx, q.cfg.Subjects.HivesBucket())
	if err != nil {
		return nil, fmt.Errorf("hives bucket %s: %w", q.cfg.Subjects.HivesBucket(), err)
	}
	return bus.LiveHives(ctx, kv, q.log)
}
