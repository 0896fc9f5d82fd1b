package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/internal/config"
)

// bindProvisionFlags adds the flags that size the streams and buckets,
// bound to f's [provision] section, for the commands that own
// provisioning: rbee provision and rbee queen.
func bindProvisionFlags(fs *flag.FlagSet, f *config.File) {
	p := &f.Provision
	fs.IntVar(&p.Replicas, "replicas", p.Replicas, "replicas of every stream and bucket, 3 in a cluster (provision.replicas)")
	fs.Int64Var(&p.JobsMax, "jobs-max", p.JobsMax, "jobs the work queue holds at most (provision.jobs_max)")
	fs.Int64Var(&p.JobsMaxPerModel, "jobs-max-per-model", p.JobsMaxPerModel, "jobs one model's queue holds at most (provision.jobs_max_per_model)")
	fs.DurationVar(&p.JobsMaxAge, "jobs-max-age", p.JobsMaxAge, "how long a job may wait for a worker (provision.jobs_max_age)")
	fs.DurationVar(&p.StreamsMaxAge, "streams-max-age", p.StreamsMaxAge, "how long a job's events are kept (provision.streams_max_age)")
	fs.DurationVar(&p.DeadLetterMaxAge, "dlq-max-age", p.DeadLetterMaxAge, "how long dead-lettered jobs are kept (provision.dlq_max_age)")
	fs.DurationVar(&p.AuditMaxAge, "audit-max-age", p.AuditMaxAge, "how long audit events are kept (provision.audit_max_age)")
	fs.Int64Var(&p.AuditMaxBytes, "audit-max-bytes", p.AuditMaxBytes, "bound of the audit stream in bytes, 0 for none (provision.audit_max_bytes)")
	fs.IntVar(&p.AuditReplicas, "audit-replicas", p.AuditReplicas, "replicas of the audit stream, 0 for provision.replicas (provision.audit_replicas)")
	fs.DurationVar(&p.WorkerTTL, "worker-ttl", p.WorkerTTL, "how soon a worker that stops heartbeating leaves the registry (provision.worker_ttl)")
	fs.DurationVar(&p.HiveTTL, "hive-ttl", p.HiveTTL, "how soon a hive that stops heartbeating leaves the registry (provision.hive_ttl)")
}

// runProvision creates or updates rbee's streams and buckets and exits: the
// one command that owns them, besides the queen, which runs the same on
// start and keeps them.
func runProvision(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var nf *natsFlags
	l := &configLoader{name: "provision", args: args, sections: config.ProvisionSections, bind: func(fs *flag.FlagSet, f *config.File) {
		nf = bindNATSFlags(fs, f, "rbee-provision")
		bindProvisionFlags(fs, f)
	}}
	f, err := l.load(stdout, stderr)
	if err != nil {
		return validated(err)
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	log := newLogger(stderr, f.Log.Level)
	nc, js, err := nf.connect(ctx, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	p := f.Provisioning()
	if err := bus.Provision(ctx, js, subj, p); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "provisioned the streams %s, %s, %s, %s and the buckets %s, %s, %s, %s (%d replicas)\n",
		subj.JobsStream(), subj.StreamsStream(), subj.EventsStream(), subj.DeadLetterStream(),
		subj.WorkersBucket(), subj.HivesBucket(), subj.CancelsBucket(), subj.IdempotencyBucket(), p.Replicas)
	return err
}
