package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// registryTimeout bounds one registry command.
const registryTimeout = 10 * time.Second

// subcommands dispatches "rbee <name> <sub> ..." to one of subs.
func subcommands(name string, subs map[string]command) func(context.Context, []string, io.Writer, io.Writer) error {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		if len(args) == 0 || subs[args[0]].run == nil {
			fmt.Fprintf(stderr, "usage: rbee %s <command> [flags]\n\ncommands:\n", name)
			names := make([]string, 0, len(subs))
			for n := range subs {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				fmt.Fprintf(stderr, "  %-7s %s\n", n, subs[n].summary)
			}
			if len(args) == 0 {
				return usageError{fmt.Errorf("%s: no command given", name)}
			}
			if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
				return flag.ErrHelp
			}
			return usageError{fmt.Errorf("%s: unknown command %q", name, args[0])}
		}
		return subs[args[0]].run(ctx, args[1:], stdout, stderr)
	}
}

var runWorkers = subcommands("workers", map[string]command{
	"ls": {"list live workers: the workers bucket, whose keys expire with their heartbeats", runWorkersLs},
})

var runHives = subcommands("hives", map[string]command{
	"ls": {"list live hives: the hives bucket, whose keys expire with their heartbeats", runHivesLs},
})

var runJobs = subcommands("jobs", map[string]command{
	"show":   {"show one job's state and answer, from its events", runJobsShow},
	"cancel": {"cancel a job, queued or running", runJobsCancel},
	"dlq":    {"'dlq ls': list dead-lettered jobs", subcommands("jobs dlq", map[string]command{"ls": {"list dead-lettered jobs, oldest first", runDLQLs}})},
})

// registryClient parses a registry command's flags (plus the NATS ones)
// and connects; args holds the positional arguments left. The caller
// closes the connection.
type registryClient struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	subj schemas.Subjects
	args []string
}

func connectRegistry(ctx context.Context, fs *flag.FlagSet, nf *natsFlags, args []string, positional int, stderr io.Writer) (*registryClient, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() != positional {
		fs.Usage()
		return nil, usageError{fmt.Errorf("want %d arguments, got %d: %v", positional, fs.NArg(), fs.Args())}
	}
	subj, err := nf.subjects()
	if err != nil {
		return nil, err
	}
	nc, js, err := nf.connect(ctx, newLogger(stderr, "warn"))
	if err != nil {
		return nil, err
	}
	return &registryClient{nc: nc, js: js, subj: subj, args: fs.Args()}, nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ago says how long before now t was, to the second.
func ago(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return max(time.Since(t), 0).Truncate(time.Second).String()
}

func runWorkersLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("workers ls", stderr)
	nf, err := addNATSFlags(fs, "rbee-workers")
	if err != nil {
		return err
	}
	asJSON := fs.Bool("json", false, "print the heartbeats as JSON")
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	c, err := connectRegistry(ctx, fs, nf, args, 0, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	kv, err := c.js.KeyValue(ctx, c.subj.WorkersBucket())
	if err != nil {
		return fmt.Errorf("workers ls: workers bucket %s: %w", c.subj.WorkersBucket(), err)
	}
	rows, err := bus.LiveWorkers(ctx, kv, nil)
	if err != nil {
		return fmt.Errorf("workers ls: %w", err)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].WorkerID < rows[j].WorkerID })
	if *asJSON {
		if rows == nil {
			rows = []schemas.WorkerHeartbeat{}
		}
		return writeJSON(stdout, rows)
	}
	// The workers their hives gave up on have no heartbeat: their hives
	// list them.
	var failed []schemas.HiveHeartbeat
	if hkv, err := c.js.KeyValue(ctx, c.subj.HivesBucket()); err == nil {
		failed, _ = bus.LiveHives(ctx, hkv, nil)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tMODEL\tHIVE\tSTATE\tBUSY\tCONTEXT\tPID\tSEEN")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\t%d\t%s ago\n", r.WorkerID, r.Model, orDash(r.HiveID), r.State,
			r.Busy, r.Slots, r.Context, r.PID, ago(r.Time))
	}
	for _, h := range failed {
		for _, f := range h.Failed {
			fmt.Fprintf(tw, "%s\t%s\t%s\tfailed: %s\t-\t-\t-\t%s ago\n", f.WorkerID, f.Model, h.HiveID, f.Reason, ago(f.Since))
		}
	}
	return tw.Flush()
}

func runHivesLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("hives ls", stderr)
	nf, err := addNATSFlags(fs, "rbee-hives")
	if err != nil {
		return err
	}
	asJSON := fs.Bool("json", false, "print the heartbeats as JSON")
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	c, err := connectRegistry(ctx, fs, nf, args, 0, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	kv, err := c.js.KeyValue(ctx, c.subj.HivesBucket())
	if err != nil {
		return fmt.Errorf("hives ls: hives bucket %s: %w", c.subj.HivesBucket(), err)
	}
	rows, err := bus.LiveHives(ctx, kv, nil)
	if err != nil {
		return fmt.Errorf("hives ls: %w", err)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].HiveID < rows[j].HiveID })
	if *asJSON {
		if rows == nil {
			rows = []schemas.HiveHeartbeat{}
		}
		return writeJSON(stdout, rows)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HIVE\tHOST\tCPUS\tMEMORY\tFREE\tWORKERS\tSEEN")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s ago\n", r.HiveID, orDash(r.Hostname), r.CPUs,
			gib(r.MemoryBytes), gib(r.FreeBytes), orDash(strings.Join(r.Workers, ",")), ago(r.Time))
	}
	return tw.Flush()
}

func gib(b uint64) string { return fmt.Sprintf("%.1fGiB", float64(b)/(1<<30)) }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runJobsShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("jobs show", stderr)
	nf, err := addNATSFlags(fs, "rbee-jobs")
	if err != nil {
		return err
	}
	asJSON := fs.Bool("json", false, "print the job's record as JSON")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rbee jobs show [flags] JOB_ID")
		fs.PrintDefaults()
	}
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	// Flags may follow the ID.
	c, err := connectRegistry(ctx, fs, nf, idLast(args), 1, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	st, err := bus.ReadJob(ctx, c.js, c.subj, c.args[0])
	if err != nil {
		if errors.Is(err, bus.ErrJobNotFound) {
			return fmt.Errorf("jobs show: %w (no events: the ID is unknown, the job is still queued, or its events are older than the events stream keeps)", err)
		}
		return fmt.Errorf("jobs show: %w", err)
	}
	if *asJSON {
		return writeJSON(stdout, st)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	row := func(k, format string, v ...any) { fmt.Fprintf(tw, "%s\t"+format+"\n", append([]any{k}, v...)...) }
	row("job", "%s", st.ID)
	row("state", "%s", st.State)
	row("owner", "%s", st.Owner)
	row("worker", "%s (delivery %d)", orDash(st.WorkerID), st.Delivery)
	row("tokens", "%d", st.Tokens)
	if st.Usage != nil {
		row("usage", "%d prompt + %d completion = %d tokens", st.Usage.PromptTokens, st.Usage.CompletionTokens, st.Usage.TotalTokens)
	}
	if st.StopReason != "" {
		row("stop", "%s", st.StopReason)
	}
	if st.Error != nil {
		row("error", "%s: %s", st.Error.Code, st.Error.Message)
	}
	row("updated", "%s (%s ago)", st.Updated.Format(time.RFC3339), ago(st.Updated))
	row("text", "%q", st.Text)
	return tw.Flush()
}

// idLast moves the first argument to the end when it is not a flag, so that
// "jobs show ID --json" parses as "jobs show --json ID".
func idLast(args []string) []string {
	if len(args) > 1 && !strings.HasPrefix(args[0], "-") {
		return append(append([]string{}, args[1:]...), args[0])
	}
	return args
}

func runJobsCancel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("jobs cancel", stderr)
	nf, err := addNATSFlags(fs, "rbee-jobs")
	if err != nil {
		return err
	}
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rbee jobs cancel [flags] JOB_ID")
		fs.PrintDefaults()
	}
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	c, err := connectRegistry(ctx, fs, nf, idLast(args), 1, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	id := c.args[0]
	if !schemas.ValidID(id) {
		return usageError{fmt.Errorf("jobs cancel: %q is not a valid job ID", id)}
	}
	kv, err := c.js.KeyValue(ctx, c.subj.CancelsBucket())
	if err == nil {
		_, err = kv.Put(ctx, id, []byte("rbee jobs cancel"))
	}
	if err != nil {
		return fmt.Errorf("jobs cancel %s: %w", id, err)
	}
	_, err = fmt.Fprintf(stdout, "cancelled %s: a queued job will not start, a running one stops within a token\n", id)
	return err
}

// redactJob masks the event key in a dump of a job's message: it is the
// secret of the worker holding the job, and no reader of a dump needs it.
func redactJob(data []byte) json.RawMessage {
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil || fields["event_key"] == nil {
		return data
	}
	fields["event_key"] = json.RawMessage(`"` + schemas.Secret("").String() + `"`)
	out, err := json.Marshal(fields)
	if err != nil {
		return data
	}
	return out
}

func runDLQLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("jobs dlq ls", stderr)
	nf, err := addNATSFlags(fs, "rbee-jobs")
	if err != nil {
		return err
	}
	model := fs.String("model", "", "only this model's dead letters")
	limit := fs.Int("limit", 100, "the newest this many (0: all)")
	asJSON := fs.Bool("json", false, "print the dead letters as JSON, with each job's message")
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	c, err := connectRegistry(ctx, fs, nf, args, 0, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	if *model != "" && !schemas.ValidModel(*model) {
		return usageError{fmt.Errorf("jobs dlq ls: %q is not a valid model name", *model)}
	}
	rows, err := bus.ReadDeadLetters(ctx, c.js, c.subj, *model, *limit)
	if err != nil {
		return fmt.Errorf("jobs dlq ls: %w", err)
	}
	if *asJSON {
		type deadLetter struct {
			JobID      string          `json:"job_id"`
			Model      string          `json:"model"`
			Code       schemas.Code    `json:"code"`
			Reason     string          `json:"reason"`
			Deliveries int             `json:"deliveries"`
			Worker     string          `json:"worker"`
			Seq        uint64          `json:"seq"`
			Time       time.Time       `json:"time"`
			Job        json.RawMessage `json:"job,omitempty"`
			Raw        string          `json:"raw,omitempty"`
		}
		out := make([]deadLetter, 0, len(rows))
		for _, d := range rows {
			m, _ := c.subj.ModelOfJobs(d.Subject)
			r := deadLetter{JobID: d.JobID, Model: m, Code: d.Code, Reason: d.Reason, Deliveries: d.Deliveries,
				Worker: d.Worker, Seq: d.Seq, Time: d.Time}
			if json.Valid(d.Data) {
				r.Job = redactJob(d.Data)
			} else {
				r.Raw = string(d.Data)
			}
			out = append(out, r)
		}
		return writeJSON(stdout, out)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tMODEL\tCODE\tDELIVERIES\tWORKER\tAGE\tREASON")
	for _, d := range rows {
		m, _ := c.subj.ModelOfJobs(d.Subject)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", orDash(d.JobID), orDash(m), d.Code, d.Deliveries,
			orDash(d.Worker), ago(d.Time), d.Reason)
	}
	return tw.Flush()
}
