package hive

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/rbee-dev/rbee/internal/dirlock"
)

// stateFileName is the hive's record of its running workers, in its data
// directory.
const stateFileName = "workers.json"

// workerRecord is what a hive keeps about one running worker process, so
// that the next hive can tell whether the process it finds is that worker.
type workerRecord struct {
	ID        string    `json:"id"`
	Model     string    `json:"model"`
	PID       int       `json:"pid"`        // 0: the process is being started
	StartTime uint64    `json:"start_time"` // /proc/<pid>/stat field 22
	SpecHash  string    `json:"spec_hash"`  // specHash of what it was started as
	Started   time.Time `json:"started"`
}

type stateFile struct {
	Version int            `json:"version"`
	HiveID  string         `json:"hive_id"`
	Workers []workerRecord `json:"workers"`
}

// state is the hive's data directory while the hive holds it: the lock, and
// the workers file rewritten (temp file, then rename) at every change. A nil
// state keeps nothing: a hive without a data directory adopts nothing.
type state struct {
	lock   *dirlock.Lock
	path   string
	hiveID string
	log    *slog.Logger

	mu      sync.Mutex
	workers map[string]workerRecord
}

// openState locks dir and reads the workers a hive that used it before left
// running. A second hive on the same directory gets a *dirlock.HeldError.
func openState(dir, hiveID string, log *slog.Logger) (*state, error) {
	lock, err := dirlock.Acquire(dir)
	if err != nil {
		return nil, fmt.Errorf("hive data directory: %w", err)
	}
	s := &state{lock: lock, path: filepath.Join(dir, stateFileName), hiveID: hiveID, log: log, workers: map[string]workerRecord{}}
	b, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return s, nil
	case err != nil:
		_ = lock.Release()
		return nil, fmt.Errorf("hive state: %w", err)
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		// Written by rename, the file is whole or absent; a broken one was
		// edited by hand. Its workers, if any live, are not adopted.
		log.Warn("hive state file unreadable; adopting no workers", "path", s.path, "err", err)
		return s, nil
	}
	for _, r := range f.Workers {
		s.workers[r.ID] = r
	}
	return s, nil
}

// close releases the data directory, keeping the records: workers still
// running then are for the next hive to adopt.
func (s *state) close() error {
	if s == nil {
		return nil
	}
	return s.lock.Release()
}

// record returns the record for id, if any.
func (s *state) record(id string) (workerRecord, bool) {
	if s == nil {
		return workerRecord{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.workers[id]
	return r, ok
}

func (s *state) put(r workerRecord) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.workers[r.ID] = r
	s.saveLocked()
}

// remove forgets the worker id if its record is for pid: a later process of
// the same worker may already have replaced it.
func (s *state) remove(id string, pid int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.workers[id]; !ok || r.PID != pid {
		return
	}
	delete(s.workers, id)
	s.saveLocked()
}

// saveLocked writes the file. A failure is logged, not returned: the
// workers run on, and only their adoption after a hive crash is at stake.
func (s *state) saveLocked() {
	f := stateFile{Version: 1, HiveID: s.hiveID, Workers: make([]workerRecord, 0, len(s.workers))}
	for _, r := range s.workers {
		f.Workers = append(f.Workers, r)
	}
	slices.SortFunc(f.Workers, func(a, b workerRecord) int { return cmp.Compare(a.ID, b.ID) })
	if err := writeFileAtomic(s.path, f); err != nil {
		s.log.Error("write hive state file; a hive restarted after a crash may not adopt its workers", "path", s.path, "err", err)
	}
}

// writeFileAtomic writes v as JSON to a temporary file next to path and
// renames it over path, so that a reader (or a crash) sees the old file or
// the new one, never part of either.
func writeFileAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
		return err
	}
	return nil
}

// specHash identifies what a worker was started as: a process adopted must
// run the command line this hive would start. It is the SHA-256 of the
// command line as /proc/<pid>/cmdline holds it, less its last NUL.
func specHash(spec workerSpec) string {
	h := sha256.New()
	h.Write([]byte(spec.Exe))
	for _, a := range spec.Args {
		h.Write([]byte{0})
		h.Write([]byte(a))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// openDataDir locks the hive's data directory, if it has one, and gives the
// starter the records of the workers a previous hive left running.
func (h *Hive) openDataDir() (*state, error) {
	h.starter.log, h.starter.workerLog = h.log, h.base
	if h.cfg.DataDir == "" {
		return nil, nil
	}
	h.starter.dataDir, h.starter.logMax = h.cfg.DataDir, h.cfg.WorkerLogMax
	st, err := openState(h.cfg.DataDir, h.cfg.ID, h.log)
	if err != nil {
		return nil, err
	}
	h.starter.state = st
	h.log.Info("hive data directory locked", "dir", h.cfg.DataDir, "recorded_workers", len(st.workers))
	h.mu.Lock()
	wanted := make(map[string]bool, len(h.wanted))
	for id := range h.wanted {
		wanted[id] = true
	}
	h.mu.Unlock()
	st.stopUnwanted(wanted)
	return st, nil
}

// stopUnwanted asks the recorded workers this hive will not start (a model
// no longer configured, a worker spawned on request) to stop, and forgets
// them: their hive is back, so the orphan grace would never end them.
func (s *state) stopUnwanted(wanted map[string]bool) {
	s.mu.Lock()
	var unwanted []workerRecord
	for id, r := range s.workers {
		if !wanted[id] {
			unwanted = append(unwanted, r)
		}
	}
	s.mu.Unlock()
	for _, r := range unwanted {
		found := r
		if r.PID == 0 {
			found = s.resolveStart(r)
		}
		log := s.log.With("worker_id", r.ID, "pid", found.PID)
		if start, zombie, err := procStat(found.PID); found.PID != 0 && err == nil && !zombie && start == found.StartTime {
			log.Info("stopping a worker from a previous hive that this hive does not run")
			if err := signalGroup(found.PID, stopSignal); err != nil {
				log.Warn("stop the old worker", "err", err)
			}
		}
		s.remove(r.ID, r.PID)
	}
}

// resolveStart fills in the PID and start time of a start record (one
// without a PID: its hive died starting the process) from the live
// process with its command line, if there is one.
func (s *state) resolveStart(r workerRecord) workerRecord {
	if pid, start, ok := findByCommandLine(r.SpecHash); ok {
		r.PID, r.StartTime = pid, start
	}
	return r
}
