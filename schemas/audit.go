package schemas

import "time"

// Audit event types. Each producer (bus.Auditor) publishes its events on
// Audit(component, id, type), e.g. rbee.v2.audit.worker.w1.job.finished,
// chained, into the events stream, so that `nats stream view RBEE_EVENTS`
// is the system's history and `rbee audit verify` checks it.
const (
	AuditJobFinished   = "job.finished"   // a worker settled a job: completed, requeued or an error code
	AuditWorkerStarted = "worker.started" // a hive started a worker process
	AuditWorkerExited  = "worker.exited"  // a worker process ended without being asked to
	AuditWorkerStopped = "worker.stopped" // a hive stopped a worker on shutdown
	AuditWorkerFailed  = "worker.failed"  // a hive gave up restarting a worker
	// AuditSpawnRejected: a hive's preflight refused to start a worker
	// (Code says why).
	AuditSpawnRejected = "worker.rejected"
	AuditWorkerAdopted = "worker.adopted" // a restarted hive took over a worker still running from before
	AuditWorkerHung    = "worker.hung"    // a hive killed a live worker that stopped heartbeating or making progress
	AuditHiveStopping  = "hive.stopping"  // a hive began its shutdown
	AuditHiveStopped   = "hive.stopped"   // a hive finished its shutdown (Reason: how many workers left gracefully, how many were killed)
	// AuditJobAccepted: the queen queued a job for its principal.
	AuditJobAccepted = "job.accepted"
	// AuditAuthRefused: the queen refused a request's credentials or
	// scope (Code says which; Fingerprint names the key presented).
	AuditAuthRefused = "auth.refused"
	// AuditKeysReloaded: a component reloaded its API keys (Reason: what
	// changed), or failed to and kept the old ones (Code set).
	AuditKeysReloaded = "keys.reloaded"
	// AuditConfigReloaded: a component applied a new configuration (Reason:
	// the fields that changed, secrets masked), or refused it and kept the
	// old one (Code set).
	AuditConfigReloaded = "config.reloaded"
	// AuditEventForged: the queen ignored a message on a job's events
	// subject that its key did not sign (Reason: its stream sequence),
	// once per job it follows: someone with a NATS identity that may
	// write job streams tried to write into an answer it did not hold.
	AuditEventForged = "event.forged"
)

// How a worker process ended (AuditEvent.ExitKind, the hive's WorkerStatus).
const (
	ExitClean       = "clean"        // status 0
	ExitCrash       = "crash"        // a non-zero status
	ExitKilled      = "killed"       // a signal
	ExitCannotStart = "cannot_start" // the worker's reserved status: it can never start as configured
	ExitUnknown     = "unknown"      // an adopted process, whose status only its real parent learns
)

// Outcomes of a job.finished event other than an error code.
const (
	OutcomeCompleted = "completed"
	OutcomeRequeued  = "requeued"
	// OutcomeTakenOver: another delivery of the job holds it now; this
	// worker stopped and left the message alone.
	OutcomeTakenOver = "taken_over"
)

// AuditEvent records one thing that happened, for operators and tools.
type AuditEvent struct {
	Type     string    `json:"type"`
	Time     time.Time `json:"time"`
	HiveID   string    `json:"hive_id,omitempty"`
	WorkerID string    `json:"worker_id,omitempty"`
	Model    string    `json:"model,omitempty"`

	// job.finished
	JobID    string   `json:"job_id,omitempty"`
	Outcome  string   `json:"outcome,omitempty"`
	Delivery int      `json:"delivery,omitempty"` // 1 for the first run, more for redeliveries
	Usage    *Usage   `json:"usage,omitempty"`
	Timings  *Timings `json:"timings,omitempty"`

	// worker.*
	PID      int    `json:"pid,omitempty"`
	Exit     string `json:"exit,omitempty"` // how the process ended, e.g. "exit status 1"
	Restarts int    `json:"restarts,omitempty"`
	ExitKind string `json:"exit_kind,omitempty"` // Exit* constants

	// worker.rejected
	Code   Code   `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`

	// Principal is who the job or command was for: an API key's name or a
	// NATS user.
	Principal string `json:"principal,omitempty"`
	// Fingerprint is a short hash of the API key presented, never the key.
	Fingerprint string `json:"key_fingerprint,omitempty"`

	// The chain (bus.Auditor): each producer, a Component and its Source
	// ID, numbers its events from 1 and names the SHA-256 of the one
	// before, so that an altered, removed or reordered event is detected.
	Component string `json:"component,omitempty"`
	Source    string `json:"source,omitempty"`
	Seq       uint64 `json:"seq,omitempty"`
	Prev      string `json:"prev,omitempty"`
}

// Validate checks an audit event read from the wire.
func (e *AuditEvent) Validate() error {
	switch e.Type {
	case AuditJobFinished:
		if !ValidID(e.JobID) || e.Outcome == "" {
			return Errorf(CodeInvalidRequest, "job.finished needs a job_id and an outcome")
		}
	case AuditWorkerStarted, AuditWorkerExited, AuditWorkerStopped, AuditWorkerFailed, AuditSpawnRejected,
		AuditWorkerAdopted, AuditWorkerHung:
		if !ValidID(e.WorkerID) {
			return Errorf(CodeInvalidRequest, "%s needs a worker_id", e.Type)
		}
	case AuditJobAccepted, AuditEventForged:
		if !ValidID(e.JobID) || !ValidModel(e.Model) {
			return Errorf(CodeInvalidRequest, "%s needs a job_id and a model", e.Type)
		}
	case AuditAuthRefused:
		if e.Code == "" {
			return Errorf(CodeInvalidRequest, "auth.refused needs a code")
		}
	case AuditKeysReloaded, AuditConfigReloaded:
	case AuditHiveStopping, AuditHiveStopped:
		if !ValidID(e.HiveID) {
			return Errorf(CodeInvalidRequest, "%s needs a hive_id", e.Type)
		}
	default:
		return Errorf(CodeInvalidRequest, "audit event type %q is not known", e.Type)
	}
	if e.Time.IsZero() {
		return Errorf(CodeInvalidRequest, "audit event without time")
	}
	return nil
}
