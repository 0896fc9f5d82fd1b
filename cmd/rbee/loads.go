package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/internal/progress"
	"github.com/rbee-dev/rbee/schemas"
)

// loadBars draws workers' model loads from their progress messages, a bar
// per worker, ended with ready (and the load time) or the failure.
type loadBars struct {
	mu     sync.Mutex
	screen *progress.Screen
	bars   map[string]*progress.Bar
}

func newLoadBars(w io.Writer) *loadBars {
	return &loadBars{screen: progress.NewScreen(w), bars: map[string]*progress.Bar{}}
}

func (l *loadBars) show(p schemas.WorkerProgress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.bars[p.WorkerID]
	if b == nil {
		b = l.screen.Bar("worker " + p.WorkerID + " (" + p.Model + ")")
		l.bars[p.WorkerID] = b
	}
	switch p.Phase {
	case schemas.LoadLoading:
		b.Update(p.DoneBytes, p.TotalBytes)
		return
	case schemas.LoadReady:
		b.Done(readyNote(p))
	case schemas.LoadFailed:
		b.Done("failed: " + p.Error.Message)
	}
	delete(l.bars, p.WorkerID) // a restarted worker gets a bar of its own
}

func readyNote(p schemas.WorkerProgress) string {
	took := "under 1ms"
	if p.LoadMillis > 0 {
		took = (time.Duration(p.LoadMillis) * time.Millisecond).String()
	}
	return fmt.Sprintf("ready (loaded %s in %s)", progress.Bytes(p.TotalBytes), took)
}

// decodeProgress reads a progress message, and whether it is one.
func decodeProgress(data []byte) (schemas.WorkerProgress, bool) {
	var p schemas.WorkerProgress
	if json.Unmarshal(data, &p) != nil || p.Validate() != nil {
		return p, false
	}
	return p, true
}

// followHiveLoads draws the model loads of hive's workers on w until the
// returned stop is called: rbee up shows its workers coming up.
func followHiveLoads(nc *nats.Conn, subj schemas.Subjects, hive string, w io.Writer) (stop func(), err error) {
	bars := newLoadBars(w)
	sub, err := nc.Subscribe(subj.AllProgress(schemas.KindWorker), func(m *nats.Msg) {
		if p, ok := decodeProgress(m.Data); ok && p.HiveID == hive {
			bars.show(p)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("follow the workers' loads: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// spawnFollower follows one spawned worker of a hive until it is ready:
// its progress, and the hive's word when its process ends. It subscribes
// before the spawn is asked for, so that nothing the worker says is
// missed, however fast it loads.
type spawnFollower struct {
	subj schemas.Subjects
	msgs chan *nats.Msg
	subs []*nats.Subscription
}

func newSpawnFollower(nc *nats.Conn, subj schemas.Subjects, hive string) (*spawnFollower, error) {
	f := &spawnFollower{subj: subj, msgs: make(chan *nats.Msg, 1024)}
	for _, s := range []string{subj.AllProgress(schemas.KindWorker),
		subj.Audit(schemas.KindHive, hive, schemas.AuditWorkerExited), subj.Audit(schemas.KindHive, hive, schemas.AuditWorkerFailed)} {
		sub, err := nc.ChanSubscribe(s, f.msgs)
		if err != nil {
			f.stop()
			return nil, fmt.Errorf("follow the worker: %w", err)
		}
		f.subs = append(f.subs, sub)
	}
	if err := nc.Flush(); err != nil {
		f.stop()
		return nil, fmt.Errorf("follow the worker: %w", err)
	}
	return f, nil
}

func (f *spawnFollower) stop() {
	for _, s := range f.subs {
		_ = s.Unsubscribe()
	}
}

// wait draws worker id's load on stderr until it is ready, then says so
// on stdout; its failure, or within passing first, is an error. An exit
// the hive restarts after is told and waited past.
func (f *spawnFollower) wait(ctx context.Context, id string, within time.Duration, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	progressOf := strings.TrimSuffix(f.subj.AllProgress(schemas.KindWorker), ">")
	bars := newLoadBars(stderr)
	for {
		var m *nats.Msg
		select {
		case <-ctx.Done():
			return fmt.Errorf("worker %s is not ready after %v: see rbee workers ls and the hive's log", id, within)
		case m = <-f.msgs:
		}
		if strings.HasPrefix(m.Subject, progressOf) {
			p, ok := decodeProgress(m.Data)
			if !ok || p.WorkerID != id {
				continue
			}
			bars.show(p)
			switch p.Phase {
			case schemas.LoadReady:
				_, err := fmt.Fprintf(stdout, "worker %s %s\n", id, readyNote(p))
				return err
			case schemas.LoadFailed:
				return fmt.Errorf("worker %s cannot load its model: %s", id, p.Error.Message)
			}
			continue
		}
		var ev schemas.AuditEvent
		if json.Unmarshal(m.Data, &ev) != nil || ev.WorkerID != id {
			continue
		}
		if ev.Type == schemas.AuditWorkerFailed {
			return fmt.Errorf("worker %s failed: %s", id, ev.Reason)
		}
		fmt.Fprintf(stderr, "worker %s exited (%s); its hive starts it again\n", id, ev.Reason)
	}
}
