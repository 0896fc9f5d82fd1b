package schemas

import "time"

// LoadPhase is where a worker's model load stands.
type LoadPhase string

// The load phases, in the order a worker goes through them.
const (
	// LoadLoading: the model file is being read into memory.
	LoadLoading LoadPhase = "loading"
	// LoadReady: the model is loaded and the worker takes jobs.
	LoadReady LoadPhase = "ready"
	// LoadFailed: the model could not be loaded; the worker exits.
	LoadFailed LoadPhase = "failed"
)

// WorkerProgress is published on Progress(KindWorker, id), core NATS and
// kept nowhere, while a worker loads its model: loading messages with the
// bytes read so far, at most about ten a second, then one ready message
// with how long the load took once the worker takes jobs, or one failed
// message with why it never will.
type WorkerProgress struct {
	WorkerID   string    `json:"worker_id"`
	HiveID     string    `json:"hive_id,omitempty"`
	Model      string    `json:"model"`
	Phase      LoadPhase `json:"phase"`
	DoneBytes  int64     `json:"done_bytes"`
	TotalBytes int64     `json:"total_bytes"`
	// LoadMillis is how long the model took to load (ready).
	LoadMillis int64     `json:"load_ms,omitempty"`
	Error      *Error    `json:"error,omitempty"` // failed
	Time       time.Time `json:"time"`
}

// Validate checks a progress message read from the wire.
func (p *WorkerProgress) Validate() error {
	switch {
	case !ValidID(p.WorkerID):
		return Errorf(CodeInvalidRequest, "worker_id %q is not a valid ID", p.WorkerID)
	case p.HiveID != "" && !ValidID(p.HiveID):
		return Errorf(CodeInvalidRequest, "hive_id %q is not a valid ID", p.HiveID)
	case !ValidModel(p.Model):
		return Errorf(CodeInvalidRequest, "model %q is not a valid model name", p.Model)
	case p.Phase != LoadLoading && p.Phase != LoadReady && p.Phase != LoadFailed:
		return Errorf(CodeInvalidRequest, "phase %q: want loading, ready or failed", p.Phase)
	case p.DoneBytes < 0 || p.TotalBytes < 0 || p.DoneBytes > p.TotalBytes:
		return Errorf(CodeInvalidRequest, "%d of %d bytes loaded", p.DoneBytes, p.TotalBytes)
	case p.LoadMillis < 0:
		return Errorf(CodeInvalidRequest, "load_ms %d is negative", p.LoadMillis)
	case p.Phase == LoadFailed && p.Error == nil:
		return Errorf(CodeInvalidRequest, "a failed load says why: error is missing")
	}
	return nil
}
