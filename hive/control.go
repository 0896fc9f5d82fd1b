package hive

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// ServiceName and ServiceVersion identify a hive's micro service (nats
// micro ls); its metadata carries the hive's ID.
const (
	ServiceName    = "rbee-hive"
	ServiceVersion = "0.1.0"
)

// stopTimeout bounds a stop request's wait for the process to go: longer
// than any grace a worker gets.
func (h *Hive) stopTimeout() time.Duration { return h.cfg.StopGrace + 10*time.Second }

// startService adds the hive's micro service: spawn, stop, list, drain and
// shutdown under <prefix>.v2.control.hive.<id>, and the plain control
// subject itself, which takes {"command":"shutdown"} as it always has.
func (h *Hive) startService(ctx context.Context, stop context.CancelCauseFunc) (micro.Service, error) {
	svc, err := micro.AddService(h.nc, micro.Config{
		Name:        ServiceName,
		Version:     ServiceVersion,
		Description: "rbee hive: starts, stops and lists the workers of one machine",
		Metadata:    map[string]string{"hive_id": h.cfg.ID},
	})
	if err != nil {
		return nil, fmt.Errorf("hive: add micro service: %w", err)
	}
	base := h.cfg.Subjects.Control(schemas.KindHive, h.cfg.ID)
	handlers := map[string]micro.HandlerFunc{
		schemas.HiveSpawn:    h.handleSpawn,
		schemas.HiveStop:     func(req micro.Request) { h.handleStop(ctx, req) },
		schemas.HiveList:     h.handleList,
		schemas.HiveDrain:    h.handleDrain,
		schemas.HiveShutdown: func(req micro.Request) { h.handleShutdown(req, stop) },
	}
	for _, name := range schemas.HiveEndpoints {
		if err = svc.AddEndpoint(name, handlers[name], micro.WithEndpointSubject(h.cfg.Subjects.HiveControl(h.cfg.ID, name))); err != nil {
			break
		}
	}
	if err == nil {
		err = svc.AddEndpoint("control", micro.HandlerFunc(func(req micro.Request) { h.control(req, stop) }),
			micro.WithEndpointSubject(base))
	}
	if err != nil {
		if serr := svc.Stop(); serr != nil {
			h.log.Warn("stop micro service", "err", serr)
		}
		return nil, fmt.Errorf("hive: add control endpoints on %s: %w", base, err)
	}
	return svc, nil
}

// decode reads a request strictly: this is rbee's own contract, and a
// misspelt field is a mistake to report, not to ignore.
func decode(data []byte, v interface{ Validate() error }) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return schemas.Errorf(schemas.CodeInvalidRequest, "decode request: %v", err)
	}
	return v.Validate()
}

// answer sends reply, or err as a micro error (code and message in the
// Nats-Service-Error headers, an ErrorResponse body). It publishes on the
// hive's connection, not through req, since a stop is answered from a
// goroutine of its own (see bus.AnswerError).
func (h *Hive) answer(req micro.Request, reply any, err error) {
	if err != nil {
		var se *schemas.Error
		if !errors.As(err, &se) {
			se = schemas.Wrap(schemas.CodeInternal, err)
		}
		body, merr := json.Marshal(schemas.ErrorResponse{Error: *se})
		if merr != nil {
			h.log.Error("encode control error", "err", merr)
		}
		err = bus.AnswerError(h.nc, req.Reply(), string(se.Code), se.Message, body)
	} else {
		var data []byte
		if data, err = json.Marshal(reply); err == nil {
			err = h.nc.Publish(req.Reply(), data)
		}
	}
	if err != nil {
		h.log.Warn("answer control request", "subject", req.Subject(), "err", err)
	}
}

func (h *Hive) handleSpawn(req micro.Request) {
	var r schemas.SpawnRequest
	err := decode(req.Data(), &r)
	var reply schemas.SpawnReply
	if err == nil {
		reply, err = h.spawn(r)
	}
	h.answer(req, reply, err)
}

// handleStop answers once the worker's process is gone, which may take its
// grace period, from a goroutine of its own so that other requests are
// not held up; Run waits for it.
func (h *Hive) handleStop(ctx context.Context, req micro.Request) {
	var r schemas.StopRequest
	if err := decode(req.Data(), &r); err != nil {
		h.answer(req, nil, err)
		return
	}
	// Counted under h.mu, which Run holds to set stopping before it waits
	// for the calls: none starts once that wait has begun.
	h.mu.Lock()
	if h.stopping {
		h.mu.Unlock()
		h.answer(req, nil, schemas.Errorf(schemas.CodeShuttingDown, "hive %s is shutting down", h.cfg.ID))
		return
	}
	h.calls.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.calls.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), h.stopTimeout())
		defer cancel()
		reply, err := h.stopWorker(sctx, r)
		h.answer(req, reply, err)
	}()
}

func (h *Hive) handleList(req micro.Request) { h.answer(req, h.list(), nil) }

func (h *Hive) handleDrain(req micro.Request) {
	var r schemas.DrainRequest
	if err := decode(req.Data(), &r); err != nil {
		h.answer(req, nil, err)
		return
	}
	h.mu.Lock()
	h.draining = !r.Resume
	h.mu.Unlock()
	h.log.Info("drain", "draining", !r.Resume, "reason", r.Reason)
	h.answer(req, schemas.DrainReply{HiveID: h.cfg.ID, Draining: !r.Resume}, nil)
}

// handleShutdown answers, then begins the hive's shutdown.
func (h *Hive) handleShutdown(req micro.Request, stop context.CancelCauseFunc) {
	var r schemas.ShutdownRequest
	if err := decode(req.Data(), &r); err != nil {
		h.answer(req, nil, err)
		return
	}
	reply := schemas.ShutdownReply{HiveID: h.cfg.ID, Workers: []string{}}
	for _, st := range h.Workers() {
		if st.State != StateStopped && st.State != StateFailed {
			reply.Workers = append(reply.Workers, st.ID)
		}
	}
	h.log.Info("control command", "command", schemas.ControlShutdown, "reason", r.Reason)
	h.answer(req, reply, nil)
	stop(errShutdownRequested)
}

// control answers the plain control subject: {"command":"shutdown"}.
func (h *Hive) control(req micro.Request, stop context.CancelCauseFunc) {
	var c schemas.Control
	err := json.Unmarshal(req.Data(), &c)
	if err != nil {
		err = schemas.Errorf(schemas.CodeInvalidRequest, "decode control message: %v", err)
	} else {
		err = c.Validate()
	}
	var reply schemas.ControlReply
	if err != nil {
		var se *schemas.Error
		if !errors.As(err, &se) {
			se = schemas.Wrap(schemas.CodeInternal, err)
		}
		reply.Error = se
		h.log.Warn("bad control message", "err", err)
	} else {
		reply.OK = true
		h.log.Info("control command", "command", c.Command, "reason", c.Reason)
	}
	if req.Reply() != "" {
		if err := req.RespondJSON(reply); err != nil {
			h.log.Warn("answer control message", "err", err)
		}
	}
	if reply.OK {
		stop(errShutdownRequested)
	}
}

// list describes the hive's workers and catalog.
func (h *Hive) list() schemas.HiveListReply {
	h.mu.Lock()
	defer h.mu.Unlock()
	reply := schemas.HiveListReply{
		HiveID: h.cfg.ID, Draining: h.draining || h.stopping,
		Workers: []schemas.HiveWorkerStatus{}, Models: []schemas.HiveModelStatus{},
	}
	for _, p := range h.order {
		st := p.w.snapshot()
		ws := schemas.HiveWorkerStatus{
			ID: st.ID, Model: st.Model, State: string(st.State), PID: st.PID, Restarts: st.Restarts,
			StartedAt: st.StartedAt, LastExit: st.LastExit,
		}
		if p.cancel != nil {
			ws.LastBusy = p.lastActive
		}
		reply.Workers = append(reply.Workers, ws)
	}
	wanted := map[string]int{}
	for _, m := range h.wanted {
		wanted[m.Name]++
	}
	for _, name := range h.models {
		ms := schemas.HiveModelStatus{Name: name, Wanted: wanted[name]}
		if r, ok := h.rejected[name]; ok {
			ms.Rejected = r.code
		}
		reply.Models = append(reply.Models, ms)
	}
	return reply
}

// followWorkers reads the heartbeats of the hive's own workers, to know
// when each last had a job: busy slots, or tokens made since the last beat.
func (h *Hive) followWorkers() (*nats.Subscription, error) {
	subject := h.cfg.Subjects.Heartbeat(schemas.KindWorker, "*")
	sub, err := h.nc.Subscribe(subject, func(m *nats.Msg) {
		var hb schemas.WorkerHeartbeat
		if json.Unmarshal(m.Data, &hb) != nil || hb.Validate() != nil || hb.HiveID != h.cfg.ID {
			return
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		p := h.procs[hb.WorkerID]
		if p == nil || !p.running() {
			return
		}
		if hb.Busy > 0 || hb.Progress != p.progress {
			p.lastActive = time.Now()
		}
		p.busy, p.progress = hb.Busy, hb.Progress
		h.noteMetricsURL(p, hb)
	})
	if err != nil {
		return nil, fmt.Errorf("hive: subscribe to %s: %w", subject, err)
	}
	return sub, nil
}
