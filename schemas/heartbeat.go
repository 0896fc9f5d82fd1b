package schemas

import "time"

// Component kinds, as used in heartbeat and control subjects.
const (
	KindWorker = "worker"
	KindHive   = "hive"
	KindQueen  = "queen"
)

// Worker states.
const (
	WorkerStarting = "starting"
	WorkerReady    = "ready"
	WorkerDraining = "draining"
)

// WorkerHeartbeat is published on Heartbeat("worker", id) and kept under the
// worker's ID in the workers KV bucket, whose TTL removes a worker that died.
type WorkerHeartbeat struct {
	WorkerID string `json:"worker_id"`
	HiveID   string `json:"hive_id,omitempty"`
	Model    string `json:"model"`
	State    string `json:"state"`
	Slots    int    `json:"slots"`
	Busy     int    `json:"busy"`
	PID      int    `json:"pid"`
	Context  int    `json:"context_length"`
	// Progress counts the tokens the worker has produced since it started:
	// a hive sees a worker that is busy but stuck by its standing still.
	Progress uint64 `json:"progress,omitempty"`
	// MetricsURL is where the worker serves its Prometheus metrics, when it
	// does: its hive scrapes a loopback one into its own /metrics.
	MetricsURL string    `json:"metrics_url,omitempty"`
	Time       time.Time `json:"time"`
}

// Validate checks a heartbeat read from the wire.
func (h *WorkerHeartbeat) Validate() error {
	switch {
	case !ValidID(h.WorkerID):
		return Errorf(CodeInvalidRequest, "worker_id %q is not a valid ID", h.WorkerID)
	case !ValidModel(h.Model):
		return Errorf(CodeInvalidRequest, "model %q is not a valid model name", h.Model)
	case h.State != WorkerStarting && h.State != WorkerReady && h.State != WorkerDraining:
		return Errorf(CodeInvalidRequest, "state %q: want starting, ready or draining", h.State)
	case h.Slots < 1 || h.Busy < 0 || h.Busy > h.Slots:
		return Errorf(CodeInvalidRequest, "busy %d of %d slots", h.Busy, h.Slots)
	}
	return nil
}

// HiveHeartbeat reports one machine's resources and the workers it runs.
type HiveHeartbeat struct {
	HiveID      string   `json:"hive_id"`
	Hostname    string   `json:"hostname"`
	CPUs        int      `json:"cpus"`
	MemoryBytes uint64   `json:"memory_bytes"`
	FreeBytes   uint64   `json:"free_bytes"`
	Workers     []string `json:"workers"`
	// Models are the models the hive is set up to serve, running or not:
	// a request for one whose worker is restarting gets 503, not 404.
	Models []string `json:"models,omitempty"`
	// Failed are the workers the hive gave up on (circuit breaker, a worker
	// that cannot start), with why; they stay down until the hive restarts
	// or is told to spawn them again.
	Failed []FailedWorker `json:"failed,omitempty"`
	// Draining hives take no spawns: the queen loads models elsewhere.
	Draining bool      `json:"draining,omitempty"`
	Time     time.Time `json:"time"`
}

// FailedWorker is a worker a hive stopped restarting.
type FailedWorker struct {
	WorkerID string    `json:"worker_id"`
	Model    string    `json:"model"`
	Reason   string    `json:"reason"`
	Since    time.Time `json:"since"`
}

// Validate checks a heartbeat read from the wire.
func (h *HiveHeartbeat) Validate() error {
	if !ValidID(h.HiveID) {
		return Errorf(CodeInvalidRequest, "hive_id %q is not a valid ID", h.HiveID)
	}
	if h.CPUs < 0 {
		return Errorf(CodeInvalidRequest, "cpus %d is negative", h.CPUs)
	}
	return nil
}

// Control commands.
const (
	ControlShutdown = "shutdown"
)

// Control is a command sent on Control(kind, id); the receiver answers with
// ControlReply when the request has a reply subject.
type Control struct {
	Command string `json:"command"`
	Reason  string `json:"reason,omitempty"`
}

// Validate checks a control message read from the wire.
func (c *Control) Validate() error {
	if c.Command != ControlShutdown {
		return Errorf(CodeInvalidRequest, "command %q: want shutdown", c.Command)
	}
	return nil
}

// ControlReply acknowledges a control command.
type ControlReply struct {
	OK    bool   `json:"ok"`
	Error *Error `json:"error,omitempty"`
}
