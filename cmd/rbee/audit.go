package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

var runAudit = subcommands("audit", map[string]command{
	"tail":   {"show the newest audit events; --follow keeps showing new ones", runAuditTail},
	"verify": {"check every producer's chain of audit events; exit 1 if one is broken", runAuditVerify},
	"export": {"write audit events as JSON lines, each with its hash, from --since on", runAuditExport},
})

// errAuditBroken is runAuditVerify's error when a chain is broken: the
// problems are on stdout already.
var errAuditBroken = errors.New("audit verify: the audit trail is broken")

func runAuditTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit tail", stderr)
	nf, err := addNATSFlags(fs, "rbee-audit")
	if err != nil {
		return err
	}
	n := fs.Int("n", 20, "how many of the newest events to show")
	follow := fs.Bool("follow", false, "keep showing events as they come, until interrupted")
	asJSON := fs.Bool("json", false, "one JSON object per event")
	c, err := connectRegistry(ctx, fs, nf, args, 0, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	if *n < 0 {
		return usageError{fmt.Errorf("audit tail: -n %d: want 0 or more", *n)}
	}
	rctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	// The newest n: the events stream keeps every producer's, in order.
	var last []bus.AuditRecord
	err = bus.AuditRecords(rctx, c.js, c.subj, time.Time{}, func(rec bus.AuditRecord) error {
		last = append(last, rec)
		if len(last) > *n {
			last = last[1:]
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("audit tail: %w", err)
	}
	show := auditPrinter(stdout, *asJSON)
	var after uint64
	for _, rec := range last {
		show(rec)
	}
	if len(last) > 0 {
		after = last[len(last)-1].StreamSeq
	}
	if !*follow {
		return nil
	}
	return followAudit(ctx, c.js, c.subj, after, show)
}

// followAudit prints the audit events stored after stream sequence after
// until ctx ends.
func followAudit(ctx context.Context, js jetstream.JetStream, subj schemas.Subjects, after uint64, show func(bus.AuditRecord)) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj.AllAudit()},
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: after + 1}
	cons, err := js.OrderedConsumer(ctx, subj.EventsStream(), cfg)
	if err != nil {
		return fmt.Errorf("audit tail: %w", err)
	}
	for {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit tail: %w", err)
		}
		rec, err := bus.AuditRecordOf(msg)
		if err != nil {
			rec.Event.Reason = "unreadable: " + err.Error()
		}
		show(rec)
	}
}

func auditPrinter(w io.Writer, asJSON bool) func(bus.AuditRecord) {
	if asJSON {
		enc := json.NewEncoder(w)
		return func(rec bus.AuditRecord) { _ = enc.Encode(rec) }
	}
	return func(rec bus.AuditRecord) {
		ev := rec.Event
		fmt.Fprintf(w, "%s  %s/%s#%d  %s  %s\n", ev.Time.Format(time.RFC3339), ev.Component, ev.Source, ev.Seq,
			ev.Type, auditDetail(ev))
	}
}

// auditDetail is the part of an event worth a glance, on one line.
func auditDetail(ev schemas.AuditEvent) string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+strconv.Quote(v))
		}
	}
	add("job", ev.JobID)
	add("worker", ev.WorkerID)
	add("hive", ev.HiveID)
	add("model", ev.Model)
	add("principal", ev.Principal)
	add("outcome", ev.Outcome)
	add("code", string(ev.Code))
	add("exit", ev.Exit)
	add("reason", ev.Reason)
	return strings.Join(parts, " ")
}

func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit verify", stderr)
	nf, err := addNATSFlags(fs, "rbee-audit")
	if err != nil {
		return err
	}
	asJSON := fs.Bool("json", false, "print the report as JSON")
	c, err := connectRegistry(ctx, fs, nf, args, 0, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	// Reading a long trail takes a while; the caller's ctx bounds it.
	report, err := bus.VerifyAudit(ctx, c.js, c.subj)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	if *asJSON {
		if report.Chains == nil {
			report.Chains = []bus.AuditChain{}
		}
		if report.Problems == nil {
			report.Problems = []bus.AuditProblem{}
		}
		if err := writeJSON(stdout, report); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PRODUCER\tEVENTS\tSEQ\tLAST HASH")
		for _, ch := range report.Chains {
			fmt.Fprintf(tw, "%s/%s\t%d\t%d-%d\t%s\n", ch.Component, ch.Source, ch.Events, ch.FirstSeq, ch.LastSeq, ch.LastHash)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, p := range report.Problems {
			fmt.Fprintf(stdout, "BROKEN at stream sequence %d (%s): %s\n", p.StreamSeq, p.Subject, p.Problem)
		}
		if report.OK() {
			fmt.Fprintf(stdout, "%d events in %d chains: every chain is whole\n", report.Events, len(report.Chains))
		}
	}
	if !report.OK() {
		return errAuditBroken
	}
	return nil
}

func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit export", stderr)
	nf, err := addNATSFlags(fs, "rbee-audit")
	if err != nil {
		return err
	}
	since := fs.String("since", "", "first time to export, RFC 3339 (2026-12-01T10:00:00Z) or a duration back from now (24h); default: everything")
	c, err := connectRegistry(ctx, fs, nf, args, 0, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	from, err := parseSince(*since, time.Now())
	if err != nil {
		return usageError{fmt.Errorf("audit export: %w", err)}
	}
	enc := json.NewEncoder(stdout)
	err = bus.AuditRecords(ctx, c.js, c.subj, from, func(rec bus.AuditRecord) error { return enc.Encode(rec) })
	if err != nil {
		return fmt.Errorf("audit export: %w", err)
	}
	return nil
}

// parseSince reads --since: empty (everything), an RFC 3339 time, or a
// duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("--since %q: want an RFC 3339 time or a positive duration such as 24h", s)
	}
	return now.Add(-d), nil
}
