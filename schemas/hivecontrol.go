package schemas

import (
	"strings"
	"time"
)

// The endpoints of a hive's micro service, each on
// HiveControl(id, endpoint): <prefix>.v2.control.hive.<id>.<endpoint>.
const (
	HiveSpawn    = "spawn"
	HiveStop     = "stop"
	HiveList     = "list"
	HiveDrain    = "drain"
	HiveShutdown = "shutdown"
)

// HiveEndpoints lists the endpoints, in the order they are documented.
var HiveEndpoints = []string{HiveSpawn, HiveStop, HiveList, HiveDrain, HiveShutdown}

// SpawnRequest asks a hive to start a worker of a model it knows (its
// catalog): the wanted set gains one replica, and the hive's preflight
// decides whether it starts.
type SpawnRequest struct {
	Model string `json:"model"`
	// OnDemand starts one only when the hive wants no worker of the model
	// yet: the queen's on-demand load, which many requests may ask for at
	// once.
	OnDemand bool `json:"on_demand,omitempty"`
}

// Validate checks a spawn request read from the wire.
func (r *SpawnRequest) Validate() error {
	if !ValidModel(r.Model) {
		return Errorf(CodeInvalidRequest, "model %q is not a valid model name", r.Model)
	}
	return nil
}

// SpawnReply names the worker a spawn added to the wanted set, or the one
// already wanted for an on-demand spawn (Started false).
type SpawnReply struct {
	HiveID   string `json:"hive_id"`
	WorkerID string `json:"worker_id"`
	Started  bool   `json:"started"`
}

// StopRequest asks a hive to stop one of its workers and drop it from the
// wanted set, so that it is not restarted.
type StopRequest struct {
	WorkerID string `json:"worker_id"`
	Reason   string `json:"reason,omitempty"`
}

// Validate checks a stop request read from the wire.
func (r *StopRequest) Validate() error {
	if !ValidID(r.WorkerID) {
		return Errorf(CodeInvalidRequest, "worker_id %q is not a valid ID", r.WorkerID)
	}
	return nil
}

// StopReply answers a stop once the worker's process is gone.
type StopReply struct {
	HiveID   string `json:"hive_id"`
	WorkerID string `json:"worker_id"`
	Exit     string `json:"exit,omitempty"` // how the process ended
}

// DrainRequest asks a hive to take no more spawns (control or on-demand):
// its workers go on serving, and the queen places models elsewhere.
// Resume undoes it.
type DrainRequest struct {
	Resume bool   `json:"resume,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Validate checks a drain request read from the wire.
func (r *DrainRequest) Validate() error { return validReason(r.Reason) }

// DrainReply says whether the hive is draining now.
type DrainReply struct {
	HiveID   string `json:"hive_id"`
	Draining bool   `json:"draining"`
}

// ShutdownRequest asks a hive to stop every worker and exit. The hive
// answers before it begins.
type ShutdownRequest struct {
	Reason string `json:"reason,omitempty"`
}

// Validate checks a shutdown request read from the wire.
func (r *ShutdownRequest) Validate() error { return validReason(r.Reason) }

// ShutdownReply acknowledges a shutdown request.
type ShutdownReply struct {
	HiveID  string   `json:"hive_id"`
	Workers []string `json:"workers"` // the workers being stopped
}

// maxReason bounds a free-text reason, which goes into logs.
const maxReason = 1024

func validReason(s string) error {
	if len(s) > maxReason || strings.ContainsAny(s, "\n\r") {
		return Errorf(CodeInvalidRequest, "reason: want one line of at most %d bytes", maxReason)
	}
	return nil
}

// HiveWorkerStatus is one worker in a hive's list answer.
type HiveWorkerStatus struct {
	ID        string    `json:"id"`
	Model     string    `json:"model"`
	State     string    `json:"state"` // pending, running, backoff, stopping, stopped, failed
	PID       int       `json:"pid,omitempty"`
	Restarts  int       `json:"restarts,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	LastExit  string    `json:"last_exit,omitempty"`
	// LastBusy is when the worker last had a job as its heartbeats say, or
	// when it started: the idle timeout and LRU eviction count from it.
	LastBusy time.Time `json:"last_busy,omitzero"`
}

// HiveModelStatus is one model of a hive's catalog.
type HiveModelStatus struct {
	Name   string `json:"name"`
	Wanted int    `json:"wanted"` // replicas in the wanted set
	// Rejected is the code of the preflight's last refusal to start a
	// worker of it, if the last attempt was refused.
	Rejected Code `json:"rejected,omitempty"`
}

// HiveListReply is a hive's answer to list.
type HiveListReply struct {
	HiveID   string             `json:"hive_id"`
	Draining bool               `json:"draining,omitempty"`
	Workers  []HiveWorkerStatus `json:"workers"`
	Models   []HiveModelStatus  `json:"models"`
}
