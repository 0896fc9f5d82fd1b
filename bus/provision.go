package bus

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/schemas"
)

// Provisioning sizes what Provision creates. Zero values take the defaults.
type Provisioning struct {
	// Replicas for streams and the bucket: 1 by default, 3 in a cluster.
	Replicas int
	// JobsMaxMsgs bounds the work queue; when full, publishing fails
	// (DiscardNew) so the queen can push back instead of losing jobs.
	// Default 10000.
	JobsMaxMsgs int64
	// JobsMaxPerModel bounds each model's queue within it, so that one
	// model's backlog never blocks another's. Default 1000.
	JobsMaxPerModel int64
	// JobsMaxAge drops jobs nobody took in time. Default 1h.
	JobsMaxAge time.Duration
	// DuplicateWindow is how long a job ID (Nats-Msg-Id) is remembered to
	// drop a re-published job. Default 2m; at most JobsMaxAge.
	DuplicateWindow time.Duration
	// WorkerTTL is how long a worker's heartbeat key lives in the workers
	// bucket without being refreshed. Default 15s; at least 1s.
	WorkerTTL time.Duration
	// HiveTTL is how long a hive's key lives in the hives bucket without
	// being refreshed. Default 15s; at least 1s.
	HiveTTL time.Duration
	// EventsMaxAge is how long audit events are kept. Default 7 days.
	EventsMaxAge time.Duration
	// EventsMaxBytes bounds the audit stream; the oldest events go first.
	// Default 0: no bound but the age.
	EventsMaxBytes int64
	// EventsReplicas replicates the audit stream apart from the rest, as an
	// audit trail may warrant more copies. Default: Replicas.
	EventsReplicas int
	// DeadLetterMaxAge is how long dead-lettered jobs are kept for an
	// operator to look at. Default 7 days.
	DeadLetterMaxAge time.Duration
	// StreamsMaxAge is how long a job's events are kept: the window in
	// which a worker can take a job over, a client read its stream again,
	// and rbee jobs show find it. Default 1h.
	StreamsMaxAge time.Duration
	// StreamsMaxBytes bounds the job events stream; the oldest go first.
	// Default 1 GiB.
	StreamsMaxBytes int64
}

// Defaults for Provisioning.
const (
	DefaultJobsMaxMsgs     = 10000
	DefaultJobsMaxAge      = time.Hour
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultWorkerTTL       = 15 * time.Second
	DefaultHiveTTL         = 15 * time.Second
	DefaultEventsMaxAge    = 7 * 24 * time.Hour
	DefaultDeadLetterAge   = 7 * 24 * time.Hour
	DefaultJobsMaxPerModel = 1000
	DefaultStreamsMaxAge   = time.Hour
	DefaultStreamsMaxBytes = 1 << 30
)

// Jobs consumer limits. Workers pull one job per free slot, so outstanding
// acks and waiting pull requests are both bounded by the total slots of a
// model's workers; these leave room for thousands. MaxWaiting cannot be
// changed once a consumer exists, so it is a constant.
const (
	jobsMaxAckPending = 10000
	jobsMaxWaiting    = 4096
)

func (p Provisioning) withDefaults() (Provisioning, error) {
	set := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if p.Replicas == 0 {
		p.Replicas = 1
	}
	if p.JobsMaxMsgs == 0 {
		p.JobsMaxMsgs = DefaultJobsMaxMsgs
	}
	set(&p.JobsMaxAge, DefaultJobsMaxAge)
	set(&p.DuplicateWindow, DefaultDuplicateWindow)
	set(&p.WorkerTTL, DefaultWorkerTTL)
	set(&p.HiveTTL, DefaultHiveTTL)
	set(&p.EventsMaxAge, DefaultEventsMaxAge)
	set(&p.DeadLetterMaxAge, DefaultDeadLetterAge)
	set(&p.StreamsMaxAge, DefaultStreamsMaxAge)
	if p.JobsMaxPerModel == 0 {
		p.JobsMaxPerModel = min(DefaultJobsMaxPerModel, p.JobsMaxMsgs)
	}
	if p.EventsReplicas == 0 {
		p.EventsReplicas = p.Replicas
	}
	if p.StreamsMaxBytes == 0 {
		p.StreamsMaxBytes = DefaultStreamsMaxBytes
	}
	switch {
	case p.Replicas < 1 || p.Replicas > 5:
		return p, fmt.Errorf("replicas %d: want 1 to 5", p.Replicas)
	case p.EventsReplicas < 1 || p.EventsReplicas > 5:
		return p, fmt.Errorf("events replicas %d: want 1 to 5", p.EventsReplicas)
	case p.EventsMaxBytes < 0:
		return p, fmt.Errorf("events max bytes %d: want 0 (no bound) or more", p.EventsMaxBytes)
	case p.JobsMaxMsgs < 1:
		return p, fmt.Errorf("jobs max messages %d: want at least 1", p.JobsMaxMsgs)
	case p.JobsMaxAge < time.Second:
		return p, fmt.Errorf("jobs max age %v: want at least 1s", p.JobsMaxAge)
	case p.DuplicateWindow < 0 || p.DuplicateWindow > p.JobsMaxAge:
		return p, fmt.Errorf("duplicate window %v: want at most the jobs max age %v", p.DuplicateWindow, p.JobsMaxAge)
	case p.WorkerTTL < time.Second:
		// The server's delete markers, which tell watchers that a
		// worker's key expired, live at least a second.
		return p, fmt.Errorf("worker TTL %v: want at least 1s", p.WorkerTTL)
	case p.HiveTTL < time.Second:
		return p, fmt.Errorf("hive TTL %v: want at least 1s", p.HiveTTL)
	case p.DeadLetterMaxAge < time.Minute:
		return p, fmt.Errorf("dead letter max age %v: want at least 1m", p.DeadLetterMaxAge)
	case p.EventsMaxAge < time.Second:
		return p, fmt.Errorf("events max age %v: want at least 1s", p.EventsMaxAge)
	case p.JobsMaxPerModel < 1 || p.JobsMaxPerModel > p.JobsMaxMsgs:
		return p, fmt.Errorf("jobs max per model %d: want 1 to the jobs max messages %d", p.JobsMaxPerModel, p.JobsMaxMsgs)
	case p.StreamsMaxAge < time.Minute:
		return p, fmt.Errorf("streams max age %v: want at least 1m", p.StreamsMaxAge)
	case p.StreamsMaxBytes < 1<<20:
		return p, fmt.Errorf("streams max bytes %d: want at least 1 MiB", p.StreamsMaxBytes)
	}
	return p, nil
}

// Provision creates what rbee needs on JetStream, or updates it to p: the
// jobs work-queue stream, the job events stream, the audit events stream,
// the dead-letter stream, and the workers, hives, cancels and idempotency
// buckets. It is idempotent.
func Provision(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, p Provisioning) error {
	p, err := p.withDefaults()
	if err != nil {
		return fmt.Errorf("provision: %w", err)
	}
	jobs := jetstream.StreamConfig{
		Name:        subj.JobsStream(),
		Description: "rbee jobs waiting for a worker",
		Subjects:    []string{subj.AllJobs()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardNew,
		// Per subject: each model's queue is bounded on its own.
		DiscardNewPerSubject: true,
		MaxMsgsPerSubject:    p.JobsMaxPerModel,
		MaxMsgs:              p.JobsMaxMsgs,
		MaxAge:               p.JobsMaxAge,
		Duplicates:           p.DuplicateWindow,
		Replicas:             p.Replicas,
	}
	if _, err := js.CreateOrUpdateStream(ctx, jobs); err != nil {
		return fmt.Errorf("provision stream %s: %w", jobs.Name, err)
	}
	streams := jetstream.StreamConfig{
		Name:        subj.StreamsStream(),
		Description: "rbee job events: each job's token stream, fenced by expected last subject sequence",
		Subjects:    []string{subj.AllJobEvents()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      p.StreamsMaxAge,
		MaxBytes:    p.StreamsMaxBytes,
		// A worker taking a job over reads its last event; direct gets
		// answer from any replica without a consumer.
		AllowDirect: true,
		Replicas:    p.Replicas,
	}
	if _, err := js.CreateOrUpdateStream(ctx, streams); err != nil {
		return fmt.Errorf("provision stream %s: %w", streams.Name, err)
	}
	events := jetstream.StreamConfig{
		Name:        subj.EventsStream(),
		Description: "rbee audit events, each producer's chained by SHA-256 (rbee audit verify)",
		Subjects:    []string{subj.AllAudit()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Discard:     jetstream.DiscardOld,
		MaxAge:      p.EventsMaxAge,
		MaxBytes:    cmp.Or(p.EventsMaxBytes, -1),
		// An auditor retrying a publish whose answer it lost sends the
		// same message ID; the stream keeps one copy.
		Duplicates: p.DuplicateWindow,
		// An auditor resumes its chain from its last event.
		AllowDirect: true,
		Replicas:    p.EventsReplicas,
	}
	if _, err := js.CreateOrUpdateStream(ctx, events); err != nil {
		return fmt.Errorf("provision stream %s: %w", events.Name, err)
	}
	dlq := jetstream.StreamConfig{
		Name:        subj.DeadLetterStream(),
		Description: "rbee dead letters: jobs delivered as often as allowed without ending, or unreadable",
		Subjects:    []string{subj.AllDeadLetters()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      p.DeadLetterMaxAge,
		// A worker dead-letters with the job's ID as message ID, so a
		// retry after a lost answer does not keep two copies.
		Duplicates: p.DuplicateWindow,
		Replicas:   p.Replicas,
	}
	if _, err := js.CreateOrUpdateStream(ctx, dlq); err != nil {
		return fmt.Errorf("provision stream %s: %w", dlq.Name, err)
	}
	hives := jetstream.KeyValueConfig{
		Bucket:         subj.HivesBucket(),
		Description:    "rbee live hives: heartbeats expire after the TTL",
		History:        1,
		TTL:            p.HiveTTL,
		Storage:        jetstream.MemoryStorage,
		Replicas:       p.Replicas,
		LimitMarkerTTL: p.HiveTTL,
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, hives); err != nil {
		return fmt.Errorf("provision bucket %s: %w", hives.Bucket, err)
	}
	workers := jetstream.KeyValueConfig{
		Bucket:      subj.WorkersBucket(),
		Description: "rbee live workers: heartbeats expire after the TTL",
		History:     1,
		TTL:         p.WorkerTTL,
		// Heartbeats are rewritten every few seconds; after a server
		// restart workers put them back sooner than a disk would help.
		Storage:  jetstream.MemoryStorage,
		Replicas: p.Replicas,
		// Leaves a marker when a key expires, so watchers see a dead
		// worker go instead of only noticing its absence.
		LimitMarkerTTL: p.WorkerTTL,
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, workers); err != nil {
		return fmt.Errorf("provision bucket %s: %w", workers.Bucket, err)
	}
	cancels := jetstream.KeyValueConfig{
		Bucket:      subj.CancelsBucket(),
		Description: "rbee cancelled jobs: a key per job ID, kept as long as a job may wait",
		History:     1,
		TTL:         p.JobsMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    p.Replicas,
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, cancels); err != nil {
		return fmt.Errorf("provision bucket %s: %w", cancels.Bucket, err)
	}
	idem := jetstream.KeyValueConfig{
		Bucket:      subj.IdempotencyBucket(),
		Description: "rbee idempotency keys: the job each one started, as long as its events are kept",
		History:     1,
		TTL:         p.StreamsMaxAge,
		Storage:     jetstream.FileStorage,
		Replicas:    p.Replicas,
	}
	if _, err := js.CreateOrUpdateKeyValue(ctx, idem); err != nil {
		return fmt.Errorf("provision bucket %s: %w", idem.Bucket, err)
	}
	return nil
}

// ErrNotProvisioned is wrapped by Check's error when a stream or bucket is
// missing.
var ErrNotProvisioned = errors.New("not provisioned")

// Check verifies that every stream and bucket Provision makes exists. The
// components that do not own provisioning (workers, hives) bind to what is
// there and run Check instead: several processes re-provisioning with their
// own defaults would undo an operator's settings, the last one to start
// winning.
func Check(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects) error {
	var missing []string
	for _, name := range []string{subj.JobsStream(), subj.StreamsStream(), subj.EventsStream(), subj.DeadLetterStream(),
		"KV_" + subj.WorkersBucket(), "KV_" + subj.HivesBucket(), "KV_" + subj.CancelsBucket(), "KV_" + subj.IdempotencyBucket()} {
		_, err := js.Stream(ctx, name)
		switch {
		case err == nil:
		case errors.Is(err, jetstream.ErrStreamNotFound):
			missing = append(missing, name)
		default:
			return fmt.Errorf("check stream %s: %w", name, err)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s missing (run rbee provision, or start the queen, which provisions)",
			ErrNotProvisioned, strings.Join(missing, ", "))
	}
	return nil
}

// EnsureJobsConsumer binds to the durable pull consumer that all workers of
// one model share, creating it with the given lease and delivery limit when
// it does not exist. An existing consumer is used as it is: the first
// worker's settings (or the operator's) stand, and the caller reads the
// lease it must renew from the consumer's config. ackWait is the lease a
// worker holds on a job before it is redelivered; maxDeliver bounds
// deliveries (-1: unbounded).
func EnsureJobsConsumer(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, model string, ackWait time.Duration, maxDeliver int) (jetstream.Consumer, error) {
	switch {
	case !schemas.ValidModel(model):
		return nil, fmt.Errorf("jobs consumer: model %q is not a valid model name", model)
	case ackWait <= 0:
		return nil, fmt.Errorf("jobs consumer for %s: ack wait %v: want more than 0", model, ackWait)
	case maxDeliver == 0 || maxDeliver < -1:
		return nil, fmt.Errorf("jobs consumer for %s: max deliver %d: want -1 or at least 1", model, maxDeliver)
	}
	name := subj.JobsConsumer(model)
	c, err := js.Consumer(ctx, subj.JobsStream(), name)
	if err == nil {
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("jobs consumer %s on %s: %w", name, subj.JobsStream(), err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "rbee workers of " + model,
		FilterSubject: subj.Jobs(model),
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    maxDeliver,
		MaxAckPending: jobsMaxAckPending,
		MaxWaiting:    jobsMaxWaiting,
	}
	// Another worker may create it at the same moment: CreateConsumer
	// accepts an identical config and then returns the existing consumer.
	c, err = js.CreateConsumer(ctx, subj.JobsStream(), cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		c, err = js.Consumer(ctx, subj.JobsStream(), name)
	}
	if err != nil {
		return nil, fmt.Errorf("jobs consumer %s on %s: %w", name, subj.JobsStream(), err)
	}
	return c, nil
}

// IsQueueFull reports whether a publish failed because the jobs stream is at
// a limit, its model's or its own: back-pressure, answered with
// schemas.CodeQueueFull.
func IsQueueFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	// The server reports full streams as a generic store failure (10077)
	// and names the limit only in the description.
	return strings.Contains(apiErr.Description, "maximum messages exceeded") ||
		strings.Contains(apiErr.Description, "maximum messages per subject exceeded") ||
		strings.Contains(apiErr.Description, "maximum bytes exceeded")
}
