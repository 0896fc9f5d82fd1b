// Command rbee runs every part of rbee: `rbee up` starts a whole
// installation on one machine; queen, hive and worker run the parts on their
// own; generate runs the engine locally; run and models are NATS clients.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/rbee-dev/rbee/hive"
)

type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"up":          {"start NATS, a queen, a hive and a worker for the bundled model on this machine", runUp},
	"queen":       {"run the orchestrator: OpenAI-compatible HTTP and the rbee.v2.infer NATS service", runQueen},
	"hive":        {"run the machine agent that starts and supervises workers", runHive},
	"worker":      {"serve one model from the work queue (the hive starts these); 'worker stop ID', 'worker spawn --hive ID MODEL' ask a hive", runWorkerCommand},
	"shutdown":    {"stop every live hive and its workers, or one with --hive ID", runShutdown},
	"generate":    {"run a model locally and print what it generates", runGenerate},
	"run":         {"send a prompt through NATS and stream the answer", runRun},
	"models":      {"list the models live workers serve", runModels},
	"provision":   {"create or update rbee's streams and buckets on the NATS server, and exit", runProvision},
	"bench":       {"measure the engine and rbee up on this machine: a table, and every figure as JSON", runBench},
	"model":       {"make model files: 'model synth' writes a random-weight llama GGUF", runModel},
	"pull":        {"download a GGUF model over HTTP(S) into the hive's models directory, resuming a partial one", runPull},
	"workers":     {"'workers ls': list live workers", runWorkers},
	"hives":       {"'hives ls': list live hives", runHives},
	"jobs":        {"'jobs show ID', 'jobs cancel ID', 'jobs dlq ls': look up and cancel jobs, list dead letters", runJobs},
	"nats-config": {"print a nats-server authorization block giving rbee's NATS identities the least privilege rbee up gives them", runNATSConfig},
	"audit":       {"'audit tail', 'audit verify', 'audit export': read and check the tamper-evident audit trail", runAudit},
	"keys":        {"'keys new NAME': generate an HTTP API key and its key file", runKeys},
	"config":      {"'config validate FILE', 'config print [FILE]': check a configuration file, show the effective configuration", runConfig},
	"version":     {"print the version, commit, Go version and build settings", runVersion},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "rbee:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError marks errors in how rbee was called (exit status 2). Asking
// for help (-h) is no error: it exits 0.
type usageError struct{ error }

func exitCode(err error) int {
	if errors.As(err, new(cannotStart)) {
		return hive.ExitCodeCannotStart
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version") {
		_, err := io.WriteString(stdout, versionText())
		return err
	}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stderr)
		if len(args) == 0 {
			return usageError{errors.New("no command given")}
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return usageError{fmt.Errorf("unknown command %q", args[0])}
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: rbee <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nrun 'rbee <command> -h' for its flags; 'rbee --version' for the version")
}

// newFlags makes a flag set that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("rbee "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	return nil
}
