package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/rbee-dev/rbee/bus"
)

// addProvisionFlags adds the flags that size the streams and buckets to fs,
// for the commands that own provisioning: rbee provision and rbee queen.
func addProvisionFlags(fs *flag.FlagSet) *bus.Provisioning {
	p := &bus.Provisioning{}
	fs.IntVar(&p.Replicas, "replicas", 1, "replicas of every stream and bucket (3 in a cluster)")
	fs.Int64Var(&p.JobsMaxMsgs, "jobs-max", bus.DefaultJobsMaxMsgs, "jobs the work queue holds at most")
	fs.Int64Var(&p.JobsMaxPerModel, "jobs-max-per-model", bus.DefaultJobsMaxPerModel, "jobs one model's queue holds at most")
	fs.DurationVar(&p.JobsMaxAge, "jobs-max-age", bus.DefaultJobsMaxAge, "how long a job may wait for a worker")
	fs.DurationVar(&p.StreamsMaxAge, "streams-max-age", bus.DefaultStreamsMaxAge, "how long a job's events are kept")
	fs.DurationVar(&p.DeadLetterMaxAge, "dlq-max-age", bus.DefaultDeadLetterAge, "how long dead-lettered jobs are kept")
	fs.DurationVar(&p.WorkerTTL, "worker-ttl", bus.DefaultWorkerTTL, "how soon a worker that stops heartbeating leaves the registry")
	fs.DurationVar(&p.HiveTTL, "hive-ttl", bus.DefaultHiveTTL, "how soon a hive that stops heartbeating leaves the registry")
	return p
}

// runProvision creates or updates rbee's streams and buckets and exits: the
// one command that owns them, besides the queen, which runs the same on
// start and keeps them.
func runProvision(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("provision", stderr)
	nf, err := addNATSFlags(fs, "rbee-provision")
	if err != nil {
		return err
	}
	p := addProvisionFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	log := newLogger(stderr, nf.logLevel)
	nc, js, err := nf.connect(ctx, log)
	if err != nil {
		return err
	}
	defer nc.Close()
	if err := bus.Provision(ctx, js, subj, *p); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "provisioned the streams %s, %s, %s, %s and the buckets %s, %s, %s, %s (%d replicas)\n",
		subj.JobsStream(), subj.StreamsStream(), subj.EventsStream(), subj.DeadLetterStream(),
		subj.WorkersBucket(), subj.HivesBucket(), subj.CancelsBucket(), subj.IdempotencyBucket(), p.Replicas)
	return err
}
