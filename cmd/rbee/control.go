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
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// runWorkerCommand is "rbee worker": the worker process itself, or the
// control commands "worker stop ID" and "worker spawn --hive ID MODEL",
// which ask a hive.
func runWorkerCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "stop":
			return runWorkerStop(ctx, args[1:], stdout, stderr)
		case "spawn":
			return runWorkerSpawn(ctx, args[1:], stdout, stderr)
		}
	}
	return runWorker(ctx, args, stdout, stderr)
}

// controlTimeout bounds a control command; a stop waits for the worker to
// drain, which takes up to its grace period.
const controlTimeout = 60 * time.Second

func runWorkerSpawn(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("worker spawn", stderr)
	nf, err := addNATSFlags(fs, "rbee-control")
	if err != nil {
		return err
	}
	hiveID := fs.String("hive", "", "the hive that starts the worker (required)")
	wait := fs.Duration("wait", defaultSpawnWait, "follow the worker's model load this long, until it is ready (0: do not wait)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rbee worker spawn --hive ID [flags] MODEL")
		fs.PrintDefaults()
	}
	cctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	c, err := connectRegistry(cctx, fs, nf, flagsFirst(fs, args), 1, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	if *hiveID == "" {
		return usageError{errors.New("worker spawn: --hive is required")}
	}
	var follow *spawnFollower
	if *wait > 0 {
		if follow, err = newSpawnFollower(c.nc, c.subj, *hiveID); err != nil {
			return fmt.Errorf("worker spawn: %w", err)
		}
		defer follow.stop()
	}
	reply, err := bus.NewHiveClient(c.nc, c.subj).Spawn(cctx, *hiveID, schemas.SpawnRequest{Model: c.args[0]})
	if err != nil {
		return fmt.Errorf("worker spawn: %w", err)
	}
	if _, err := fmt.Fprintf(stdout, "hive %s starts worker %s of %s\n", reply.HiveID, reply.WorkerID, c.args[0]); err != nil || follow == nil {
		return err
	}
	if err := follow.wait(ctx, reply.WorkerID, *wait, stdout, stderr); err != nil {
		return fmt.Errorf("worker spawn: %w", err)
	}
	return nil
}

// defaultSpawnWait is how long worker spawn follows a load by default: a
// large model off a slow disk takes minutes.
const defaultSpawnWait = 10 * time.Minute

func runWorkerStop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("worker stop", stderr)
	nf, err := addNATSFlags(fs, "rbee-control")
	if err != nil {
		return err
	}
	hiveID := fs.String("hive", "", "the worker's hive (default: the one its heartbeat names, else whichever lists it)")
	reason := fs.String("reason", "rbee worker stop", "why, for the hive's log")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: rbee worker stop [flags] WORKER_ID")
		fs.PrintDefaults()
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout)
	defer cancel()
	c, err := connectRegistry(ctx, fs, nf, flagsFirst(fs, args), 1, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	id := c.args[0]
	if !schemas.ValidID(id) {
		return usageError{fmt.Errorf("worker stop: %q is not a valid worker ID", id)}
	}
	hc := bus.NewHiveClient(c.nc, c.subj)
	hive := *hiveID
	if hive == "" {
		if hive, err = findHive(ctx, c, hc, id); err != nil {
			return fmt.Errorf("worker stop: %w", err)
		}
	}
	reply, err := hc.Stop(ctx, hive, schemas.StopRequest{WorkerID: id, Reason: *reason})
	if err != nil {
		return fmt.Errorf("worker stop: %w", err)
	}
	_, err = fmt.Fprintf(stdout, "hive %s stopped worker %s (%s)\n", reply.HiveID, reply.WorkerID, orDash(reply.Exit))
	return err
}

// flagsFirst moves the positional arguments after the flags, so that
// "worker spawn --hive h1 MODEL --server URL" parses: the flag package
// stops at the first argument that is not a flag.
func flagsFirst(fs *flag.FlagSet, args []string) []string {
	var flags, rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil && i+1 < len(args) {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	return append(flags, rest...)
}

// findHive names the hive of worker id: the one its heartbeat gives, or,
// for a worker without a live heartbeat (failed, starting), the live hive
// that lists it.
func findHive(ctx context.Context, c *registryClient, hc *bus.HiveClient, id string) (string, error) {
	if kv, err := c.js.KeyValue(ctx, c.subj.WorkersBucket()); err == nil {
		if e, err := kv.Get(ctx, id); err == nil {
			var hb schemas.WorkerHeartbeat
			if json.Unmarshal(e.Value(), &hb) == nil && hb.HiveID != "" {
				return hb.HiveID, nil
			}
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return "", fmt.Errorf("look up worker %s: %w", id, err)
		}
	}
	hives, err := liveHives(ctx, c)
	if err != nil {
		return "", err
	}
	for _, h := range hives {
		list, err := hc.List(ctx, h.HiveID)
		if err != nil {
			continue
		}
		for _, w := range list.Workers {
			if w.ID == id {
				return h.HiveID, nil
			}
		}
	}
	return "", schemas.Errorf(schemas.CodeNotFound, "no live hive runs worker %s", id)
}

func liveHives(ctx context.Context, c *registryClient) ([]schemas.HiveHeartbeat, error) {
	kv, err := c.js.KeyValue(ctx, c.subj.HivesBucket())
	if err != nil {
		return nil, fmt.Errorf("hives bucket %s: %w", c.subj.HivesBucket(), err)
	}
	hives, err := bus.LiveHives(ctx, kv, nil)
	if err != nil {
		return nil, err
	}
	sort.Slice(hives, func(i, j int) bool { return hives[i].HiveID < hives[j].HiveID })
	return hives, nil
}

// runShutdown asks every live hive (or one) to shut down, which stops its
// workers, and waits until each has left the hives bucket.
func runShutdown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("shutdown", stderr)
	nf, err := addNATSFlags(fs, "rbee-control")
	if err != nil {
		return err
	}
	hiveID := fs.String("hive", "", "only this hive (default: every live hive)")
	reason := fs.String("reason", "rbee shutdown", "why, for the hives' logs")
	wait := fs.Duration("wait", controlTimeout, "how long to wait for the hives to stop (0: do not wait)")
	ctx, cancel := context.WithTimeout(ctx, registryTimeout+*wait)
	defer cancel()
	c, err := connectRegistry(ctx, fs, nf, args, 0, stderr)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	var ids []string
	if *hiveID != "" {
		ids = []string{*hiveID}
	} else {
		hives, err := liveHives(ctx, c)
		if err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		for _, h := range hives {
			ids = append(ids, h.HiveID)
		}
	}
	hc := bus.NewHiveClient(c.nc, c.subj)
	var failed []error
	var stopping []string
	for _, id := range ids {
		reply, err := hc.Shutdown(ctx, id, schemas.ShutdownRequest{Reason: *reason})
		if err != nil {
			failed = append(failed, fmt.Errorf("hive %s: %w", id, err))
			continue
		}
		stopping = append(stopping, id)
		fmt.Fprintf(stdout, "hive %s shutting down, stopping %d workers\n", id, len(reply.Workers))
	}
	if *wait > 0 && len(stopping) > 0 {
		if err := waitHivesGone(ctx, c, stopping, *wait); err != nil {
			failed = append(failed, err)
		} else {
			fmt.Fprintf(stdout, "%d hives stopped\n", len(stopping))
		}
	}
	if len(ids) == 0 {
		fmt.Fprintln(stdout, "no live hives")
	}
	if len(failed) > 0 {
		return fmt.Errorf("shutdown: %w", errors.Join(failed...))
	}
	return nil
}

// waitHivesGone polls the hives bucket until none of ids is in it: a hive
// deletes its key once its workers are gone.
func waitHivesGone(ctx context.Context, c *registryClient, ids []string, wait time.Duration) error {
	kv, err := c.js.KeyValue(ctx, c.subj.HivesBucket())
	if err != nil {
		return fmt.Errorf("hives bucket: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		var left []string
		for _, id := range ids {
			if _, err := kv.Get(ctx, id); err == nil {
				left = append(left, id)
			} else if !errors.Is(err, jetstream.ErrKeyNotFound) && !errors.Is(err, jetstream.ErrKeyDeleted) {
				left = append(left, id)
			}
		}
		if len(left) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("hives %v still running after %v", left, wait)
		case <-t.C:
		}
	}
}
