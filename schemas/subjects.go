package schemas

import (
	"fmt"
	"regexp"
	"strings"
)

// Version is the contract version carried in every subject.
const Version = "v2"

// DefaultPrefix is the first subject token unless the operator picks another,
// so that several rbee installations can share one NATS account.
const DefaultPrefix = "rbee"

// Headers set on messages rbee publishes.
const (
	// HeaderMsgID is JetStream's de-duplication header; a job's ID goes here.
	HeaderMsgID = "Nats-Msg-Id"
	// HeaderSchema names the message type and version, e.g. "job/v1".
	HeaderSchema = "Rbee-Schema"
)

// Headers of a message in the dead-letter stream, whose data is the job's
// message as it was queued, byte for byte.
const (
	// HeaderDeadCode is the error code the job ended with.
	HeaderDeadCode = "Rbee-Dead-Code"
	// HeaderDeadReason says why, for a person.
	HeaderDeadReason = "Rbee-Dead-Reason"
	// HeaderDeadSubject is the work-queue subject the job was queued on.
	HeaderDeadSubject = "Rbee-Dead-Subject"
	// HeaderDeliveries is how often the job had been delivered.
	HeaderDeliveries = "Rbee-Deliveries"
	// HeaderDeadWorker is the worker that dead-lettered it.
	HeaderDeadWorker = "Rbee-Dead-Worker"
)

// HeaderAuditHash carries the SHA-256 (hex) of an audit event's body, which
// names the hash of its producer's event before it (AuditEvent.Prev).
const HeaderAuditHash = "Rbee-Audit-Hash"

var (
	prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
)

// Subjects builds subject, stream, consumer and bucket names under one prefix.
type Subjects struct {
	Prefix string
}

// NewSubjects returns the names under prefix, or under DefaultPrefix when
// prefix is empty.
func NewSubjects(prefix string) (Subjects, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !prefixPattern.MatchString(prefix) {
		return Subjects{}, fmt.Errorf("subject prefix %q: want letters, digits, '-' or '_'", prefix)
	}
	return Subjects{Prefix: prefix}, nil
}

func (s Subjects) base() string {
	if s.Prefix == "" {
		return DefaultPrefix + "." + Version
	}
	return s.Prefix + "." + Version
}

func (s Subjects) upper() string {
	p := s.Prefix
	if p == "" {
		p = DefaultPrefix
	}
	return strings.ToUpper(strings.ReplaceAll(p, "-", "_"))
}

// Jobs is the work-queue subject for one model: <prefix>.v1.jobs.<model>.
func (s Subjects) Jobs(model string) string { return s.base() + ".jobs." + model }

// AllJobs matches every model's work queue.
func (s Subjects) AllJobs() string { return s.base() + ".jobs.>" }

// JobEvents is the subject of one job's events in the events stream
// (StreamsStream): <prefix>.v2.stream.<owner>.<job>. The owner is the
// queen (or any client) that submitted the job and reads every job of its
// own with one consumer on OwnerEvents.
func (s Subjects) JobEvents(owner, jobID string) string {
	return s.base() + ".stream." + owner + "." + jobID
}

// JobEventsAnyOwner matches one job's events whoever owns it: to look a
// job up by its ID alone.
func (s Subjects) JobEventsAnyOwner(jobID string) string { return s.base() + ".stream.*." + jobID }

// OwnerEvents matches the events of every job one owner submitted.
func (s Subjects) OwnerEvents(owner string) string { return s.base() + ".stream." + owner + ".>" }

// AllJobEvents matches every job's events.
func (s Subjects) AllJobEvents() string { return s.base() + ".stream.>" }

// IsJobEvents reports whether subject names a job's events under s: the only
// subjects a worker publishes a job's events on.
func (s Subjects) IsJobEvents(subject string) bool {
	_, ok := s.JobOfEvents(subject)
	return ok
}

// JobOfEvents returns the job ID of a JobEvents subject, and whether
// subject is one.
func (s Subjects) JobOfEvents(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, s.base()+".stream.")
	if !ok {
		return "", false
	}
	owner, job, ok := strings.Cut(rest, ".")
	if !ok || !ValidID(owner) || !ValidID(job) {
		return "", false
	}
	return job, true
}

// Infer is the request/reply endpoint of the queen's micro service.
func (s Subjects) Infer() string { return s.base() + ".infer" }

// Heartbeat is where a component of kind ("worker" or "hive") announces itself.
func (s Subjects) Heartbeat(kind, id string) string {
	return s.base() + ".heartbeat." + kind + "." + id
}

// AllHeartbeats matches every heartbeat.
func (s Subjects) AllHeartbeats() string { return s.base() + ".heartbeat.>" }

// Progress is where a component of kind tells how far it has got with
// something slow: a worker loading its model (WorkerProgress).
func (s Subjects) Progress(kind, id string) string {
	return s.base() + ".progress." + kind + "." + id
}

// AllProgress matches the progress of every component of kind.
func (s Subjects) AllProgress(kind string) string { return s.base() + ".progress." + kind + ".>" }

// Control addresses commands to one component: <prefix>.v1.control.<kind>.<id>.
func (s Subjects) Control(kind, id string) string {
	return s.base() + ".control." + kind + "." + id
}

// HiveControl is one endpoint of a hive's micro service:
// <prefix>.v2.control.hive.<id>.<endpoint> (schemas.HiveEndpoints).
func (s Subjects) HiveControl(id, endpoint string) string {
	return s.Control(KindHive, id) + "." + endpoint
}

// Audit is the subject of one producer's audit event:
// <prefix>.v2.audit.<component>.<id>.<type>, e.g.
// rbee.v2.audit.worker.w1.job.finished.
func (s Subjects) Audit(component, id, typ string) string {
	return s.AuditOf(component, id) + "." + typ
}

// AuditOf matches every audit event of one producer.
func (s Subjects) AuditOf(component, id string) string {
	return s.base() + ".audit." + component + "." + id
}

// AuditType matches one type of audit event, whoever produced it.
func (s Subjects) AuditType(typ string) string { return s.base() + ".audit.*.*." + typ }

// AllAudit matches every audit event of every producer.
func (s Subjects) AllAudit() string { return s.base() + ".audit.>" }

// AuditProducer returns the component and ID of an Audit subject, and
// whether subject is one.
func (s Subjects) AuditProducer(subject string) (component, id string, ok bool) {
	rest, ok := strings.CutPrefix(subject, s.base()+".audit.")
	if !ok {
		return "", "", false
	}
	parts := strings.SplitN(rest, ".", 3)
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", false
	}
	return parts[0], parts[1], true
}

// JobsStream is the JetStream work-queue stream holding pending jobs.
func (s Subjects) JobsStream() string { return s.upper() + "_JOBS" }

// StreamsStream keeps every job's events (its token stream) for a while: a
// worker that takes over a job reads what was already sent, a client that
// reconnects reads the rest.
func (s Subjects) StreamsStream() string { return s.upper() + "_STREAMS" }

// CancelsBucket is the KV bucket of cancelled jobs: a key per job ID. A
// worker checks it before starting a job and watches its job's key while
// running it, so a cancel reaches queued and running jobs alike.
func (s Subjects) CancelsBucket() string { return s.upper() + "_CANCELS" }

// IdempotencyBucket maps a client's idempotency key (hashed) to the job it
// started, so a repeated request follows that job instead of running
// another.
func (s Subjects) IdempotencyBucket() string { return s.upper() + "_IDEMPOTENCY" }

// CancelKey is the subject a put of jobID's key in the cancels bucket is
// published on, which a worker running the job subscribes to.
func (s Subjects) CancelKey(jobID string) string { return "$KV." + s.CancelsBucket() + "." + jobID }

// DeadLetters is the dead-letter subject for one model's jobs:
// <prefix>.v2.dlq.<model>.
func (s Subjects) DeadLetters(model string) string { return s.base() + ".dlq." + model }

// AllDeadLetters matches every model's dead letters.
func (s Subjects) AllDeadLetters() string { return s.base() + ".dlq.>" }

// DeadLetterStream keeps jobs that could not be run: poison that killed
// its workers, or messages no worker could read.
func (s Subjects) DeadLetterStream() string { return s.upper() + "_DLQ" }

// ModelOfJobs returns the model of a work-queue subject from Jobs, and
// whether subject is one.
func (s Subjects) ModelOfJobs(subject string) (string, bool) {
	model, ok := strings.CutPrefix(subject, s.base()+".jobs.")
	return model, ok && ValidModel(model)
}

// EventsStream is the JetStream stream keeping audit events.
func (s Subjects) EventsStream() string { return s.upper() + "_EVENTS" }

// JobsConsumer is the durable pull consumer shared by every worker of a model.
func (s Subjects) JobsConsumer(model string) string {
	return "workers_" + model
}

// WorkersBucket is the KV bucket where live workers keep a key with a TTL.
func (s Subjects) WorkersBucket() string { return s.upper() + "_WORKERS" }

// HivesBucket is the KV bucket where live hives keep a key with a TTL.
func (s Subjects) HivesBucket() string { return s.upper() + "_HIVES" }

// ValidModel reports whether name can be a model name (one subject token):
// a letter or digit, then up to 127 of those, '_', '-' and ':'. No dots,
// wildcards or spaces.
func ValidModel(name string) bool { return validToken(name, ":") }

// ValidID reports whether id can name a job, worker or hive: a letter or
// digit, then up to 127 of those, '_' and '-'.
func ValidID(id string) bool { return validToken(id, "") }

// validToken is ValidModel's and ValidID's pattern, written out: both are
// checked for every job at both ends, where a regexp cost more than the
// rest of the job's validation.
func validToken(s, extra string) bool {
	if len(s) == 0 || len(s) > 128 || !alnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '_' && c != '-' && strings.IndexByte(extra, c) < 0 {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}
