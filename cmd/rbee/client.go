package main

import (
	"context"
	"crypto/rand"
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

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/hive/bundled"
	"github.com/rbee-dev/rbee/schemas"
)

// runRun sends a prompt to the queen's infer service and prints the token
// stream as it arrives, like `nats req --wait-for-empty` but as text. When
// it stops early (Ctrl-C, its timeout), it cancels the job, so the worker
// stops too.
func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	nf, err := addNATSFlags(fs, "rbee-run")
	if err != nil {
		return err
	}
	var (
		model     = fs.String("model", bundled.Name, "model name")
		maxTokens = fs.Int("max-tokens", 256, "tokens to generate at most")
		temp      = fs.Float64("temperature", 0.8, "sampling temperature; 0 is greedy")
		chat      = fs.Bool("chat", false, "send the prompt as a user chat message")
		timeout   = fs.Duration("timeout", 5*time.Minute, "give up after this long")
	)
	hf := addHTTPFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rbee run [flags] [MODEL] PROMPT... [flags]\n\nwith two words or more and no --model, the first is the model (as in 'ollama run')")
		fs.PrintDefaults()
	}
	words, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	modelSet := false
	fs.Visit(func(f *flag.Flag) { modelSet = modelSet || f.Name == "model" })
	if !modelSet && len(words) > 1 {
		*model, words = words[0], words[1:]
	}
	prompt := strings.Join(words, " ")
	req := schemas.InferRequest{Model: *model, MaxTokens: *maxTokens, Sampling: schemas.Sampling{Temperature: temp}}
	if *chat {
		req.Messages = []schemas.Message{{Role: "user", Content: prompt}}
	} else {
		req.Prompt = prompt
	}
	if err := req.Validate(); err != nil {
		return usageError{err}
	}
	if *hf.queen != "" {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		return runHTTP(ctx, hf, req, stdout)
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	nc, js, err := nf.connect(ctx, newLogger(stderr, "warn"))
	if err != nil {
		return err
	}
	defer nc.Close()
	// The job's ID is ours, so Ctrl-C can cancel it even before it starts.
	jobID := strings.ToLower(rand.Text())
	req.ID = jobID
	defer func() {
		if ctx.Err() == nil {
			return
		}
		// Stopped early: nobody reads the rest, so the worker need not write it.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		kv, err := js.KeyValue(cctx, subj.CancelsBucket())
		if err == nil {
			_, err = kv.Put(cctx, jobID, []byte("rbee run"))
		}
		if err != nil {
			fmt.Fprintf(stderr, "run: cancel job %s: %v\n", jobID, err)
		}
	}()

	inbox := nc.NewRespInbox()
	msgs := make(chan *nats.Msg, 256)
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	body, _ := json.Marshal(req)
	if err := nc.PublishRequest(subj.Infer(), inbox, body); err != nil {
		return err
	}
	next := 0
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("run: %w", ctx.Err())
		case m := <-msgs:
			if len(m.Data) == 0 {
				return nil
			}
			if code := m.Header.Get("Nats-Service-Error-Code"); code != "" {
				return fmt.Errorf("run: %s (%s)", m.Header.Get("Nats-Service-Error"), code)
			}
			var ev schemas.Event
			if err := json.Unmarshal(m.Data, &ev); err != nil {
				return fmt.Errorf("run: bad event: %w", err)
			}
			if ev.Seq != next {
				return fmt.Errorf("run: event %d arrived, expected %d: the stream lost messages", ev.Seq, next)
			}
			next++
			switch ev.Type {
			case schemas.EventToken:
				fmt.Fprint(stdout, ev.Text)
			case schemas.EventEnd:
				fmt.Fprintln(stdout)
			case schemas.EventError:
				fmt.Fprintln(stdout)
				return fmt.Errorf("run: %w", ev.Error)
			}
		}
	}
}

// parseInterspersed parses flags before, between and after the positional
// arguments, which it returns; everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var words []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		rest := fs.Args()
		// flag stops at "--" and drops it: what follows is all words.
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(words, rest...), nil
		}
		if len(rest) == 0 {
			return words, nil
		}
		words, args = append(words, rest[0]), rest[1:]
	}
}

// runModels lists the live workers from the workers bucket.
func runModels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("models", stderr)
	nf, err := addNATSFlags(fs, "rbee-models")
	if err != nil {
		return err
	}
	hf := addHTTPFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	subj, err := nf.subjects()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if *hf.queen != "" {
		return modelsHTTP(ctx, hf, stdout)
	}
	nc, js, err := nf.connect(ctx, newLogger(stderr, "warn"))
	if err != nil {
		return err
	}
	defer nc.Close()
	kv, err := js.KeyValue(ctx, subj.WorkersBucket())
	if err != nil {
		return fmt.Errorf("models: workers bucket: %w", err)
	}
	rows, err := bus.LiveWorkers(ctx, kv, nil)
	if err != nil {
		return fmt.Errorf("models: %w", err)
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Model != rows[j].Model {
			return rows[i].Model < rows[j].Model
		}
		return rows[i].WorkerID < rows[j].WorkerID
	})
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tWORKER\tHIVE\tSTATE\tBUSY\tCONTEXT")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%d\n", r.Model, r.WorkerID, r.HiveID, r.State, r.Busy, r.Slots, r.Context)
	}
	return tw.Flush()
}
