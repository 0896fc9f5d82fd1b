package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rbee-dev/rbee/hive/bundled"
	"github.com/rbee-dev/rbee/internal/membw"
)

// benchConfig is what one `rbee bench` run measures.
type benchConfig struct {
	Quick        bool     `json:"quick"`
	Threads      int      `json:"threads"`
	Runs         int      `json:"runs"`
	Budget       float64  `json:"budget_seconds"` // per model: repeat runs only while under it
	Shape        string   `json:"shape"`
	Types        []string `json:"types"`
	Seed         uint64   `json:"seed"`
	PromptTokens int      `json:"prompt_tokens"`
	DecodeTokens int      `json:"decode_tokens"`
	Seqs         []int    `json:"concurrent_sequences"`
	SeqTokens    int      `json:"concurrent_tokens"`
	Clients      []int    `json:"serve_clients"`
	ServeTokens  int      `json:"serve_max_tokens"`
	Requests     int      `json:"serve_requests_per_level"`
	ServeSlots   int      `json:"serve_slots"`
	ServeCtx     int      `json:"serve_ctx"`
	// The bus figures' own rbee up (--slots, --replicas, --ctx), the 1-token
	// jobs timed one at a time (through HTTP and in the engine alone), the
	// raw NATS round trips, and the sustained run's clients and duration.
	BusSlots    int      `json:"bus_slots"`
	BusReplicas int      `json:"bus_replicas"`
	BusCtx      int      `json:"bus_ctx"`
	BusRuns     int      `json:"bus_ttft_runs"`
	BusRTTs     int      `json:"bus_nats_round_trips"`
	BusClients  int      `json:"bus_clients"`
	BusSeconds  float64  `json:"bus_seconds"`
	MembwBytes  int      `json:"membw_buffer_bytes"`
	MembwRuns   int      `json:"membw_runs"`
	Sections    []string `json:"sections"`

	out, cacheDir, vocab string
}

var benchSections = []string{"membw", "types", "stories", "concurrent", "serve", "bus"}

func (c *benchConfig) runs(section string) bool { return slices.Contains(c.Sections, section) }

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	var (
		quick    = fs.Bool("quick", false, "a fast smoke run: the tiny shape, few tokens, small buffers")
		out      = fs.String("out", "bench.json", "write every raw figure to this JSON file (empty: none)")
		cacheDir = fs.String("cache", "", "where generated models are kept (default $RBEE_BENCH_CACHE, else the user cache dir's rbee/bench)")
		vocab    = fs.String("vocab", "", "vocabulary GGUF for generated models (default: infer/tokenizer/testdata/ggml-vocab-llama-spm.gguf, looked up from the working directory upwards)")
		threads  = fs.Int("threads", 2, "engine threads")
		runs     = fs.Int("runs", 0, "repeat each engine measurement this many times and keep the best (0: 3, or 1 with --quick)")
		types    = fs.String("types", "", "weight types to measure, comma-separated, or 'all' (default F32,Q8_0,Q4_0,Q4_K)")
		sections = fs.String("only", strings.Join(benchSections, ","), "sections to run, comma-separated")
		seed     = fs.Uint64("seed", 7, "seed of the generated models' weights")
		busSlots = fs.Int("bus-slots", 0, "--slots of the rbee up that the bus figures run on (0: 16)")
		busReps  = fs.Int("bus-replicas", 0, "--replicas of that rbee up (0: 1)")
		busConc  = fs.Int("bus-clients", 0, "clients sending 1-token jobs at once (0: 64, or 16 with --quick)")
		busTime  = fs.Duration("bus-time", 0, "how long they send (0: 5s, or 0.5s with --quick)")
	)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := defaultBenchConfig(*quick)
	cfg.out, cfg.Threads, cfg.Seed = *out, *threads, *seed
	if *runs > 0 {
		cfg.Runs = *runs
	}
	for _, o := range []struct {
		flag string
		v    int
		dst  *int
	}{{"bus-slots", *busSlots, &cfg.BusSlots}, {"bus-replicas", *busReps, &cfg.BusReplicas}, {"bus-clients", *busConc, &cfg.BusClients}} {
		switch {
		case o.v < 0:
			return usageError{fmt.Errorf("bench: --%s must not be negative", o.flag)}
		case o.v > 0:
			*o.dst = o.v
		}
	}
	switch {
	case *busTime < 0:
		return usageError{errors.New("bench: --bus-time must not be negative")}
	case *busTime > 0:
		cfg.BusSeconds = busTime.Seconds()
	}
	switch *types {
	case "":
	case "all":
		cfg.Types = slices.Clone(synthTypes)
	default:
		cfg.Types = strings.Split(*types, ",")
		for _, t := range cfg.Types {
			if !slices.Contains(synthTypes, t) {
				return usageError{fmt.Errorf("bench: unknown type %q (want one of %s)", t, strings.Join(synthTypes, ", "))}
			}
		}
	}
	cfg.Sections = strings.Split(*sections, ",")
	for _, s := range cfg.Sections {
		if !slices.Contains(benchSections, s) {
			return usageError{fmt.Errorf("bench: unknown section %q (want some of %s)", s, strings.Join(benchSections, ","))}
		}
	}
	if cfg.Threads < 1 {
		return usageError{errors.New("bench: --threads must be at least 1")}
	}
	dir, err := benchCacheDir(*cacheDir)
	if err != nil {
		return err
	}
	cfg.cacheDir = dir
	cfg.vocab = *vocab
	if cfg.vocab == "" {
		cfg.vocab = findUpwards(filepath.Join("infer", "tokenizer", "testdata", "ggml-vocab-llama-spm.gguf"))
	}
	rep, err := runBenchmarks(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	if err := rep.writeTable(stdout); err != nil {
		return fmt.Errorf("bench: print table: %w", err)
	}
	if cfg.out != "" {
		if err := rep.writeJSON(cfg.out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nraw figures: %s\n", cfg.out)
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("bench: %d section(s) failed: %s", len(rep.Errors), strings.Join(rep.Errors, "; "))
	}
	return nil
}

func defaultBenchConfig(quick bool) benchConfig {
	if quick {
		return benchConfig{
			Quick: true, Runs: 1, Budget: 10, Shape: "tiny", Types: []string{"Q8_0"},
			PromptTokens: 16, DecodeTokens: 16, Seqs: []int{1, 2}, SeqTokens: 8,
			Clients: []int{1, 2}, ServeTokens: 8, Requests: 2, ServeSlots: 2, ServeCtx: 128,
			BusSlots: 16, BusReplicas: 1, BusCtx: 128, BusRuns: 20, BusRTTs: 100, BusClients: 16, BusSeconds: 0.5,
			MembwBytes: 32 << 20, MembwRuns: 2,
		}
	}
	return benchConfig{
		Runs: 3, Budget: 60, Shape: "stories110m", Types: []string{"F32", "Q8_0", "Q4_0", "Q4_K"},
		PromptTokens: 64, DecodeTokens: 128, Seqs: []int{1, 4, 8}, SeqTokens: 64,
		Clients: []int{1, 4, 16}, ServeTokens: 32, Requests: 16, ServeSlots: 4, ServeCtx: 512,
		BusSlots: 16, BusReplicas: 1, BusCtx: 128, BusRuns: 200, BusRTTs: 1000, BusClients: 64, BusSeconds: 5,
		MembwBytes: 512 << 20, MembwRuns: 5,
	}
}

// benchCacheDir is where generated models live between runs: outside the
// repository, so that a clean clone builds them once per machine.
func benchCacheDir(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if d := os.Getenv("RBEE_BENCH_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("bench: no cache directory (set RBEE_BENCH_CACHE or pass --cache): %w", err)
	}
	return filepath.Join(d, "rbee", "bench"), nil
}

// findUpwards returns rel under the working directory or the nearest parent
// that has it, or rel itself when none has.
func findUpwards(rel string) string {
	dir, err := os.Getwd()
	if err != nil {
		return rel
	}
	for {
		p := filepath.Join(dir, rel)
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return rel
		}
		dir = parent
	}
}

// runBenchmarks runs every section the config names. A section that fails
// is recorded in the report and the others still run; only a cancelled
// context stops the run.
func runBenchmarks(ctx context.Context, cfg benchConfig, progress io.Writer) (*benchReport, error) {
	start := time.Now()
	rep := &benchReport{Schema: 1, Started: start.UTC(), Config: cfg, System: systemInfo(ctx)}
	logf := func(format string, a ...any) {
		fmt.Fprintf(progress, "bench %6.1fs: %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
	}
	fail := func(section string, err error) {
		logf("%s failed: %v", section, err)
		rep.Errors = append(rep.Errors, fmt.Sprintf("%s: %v", section, err))
	}

	if cfg.runs("membw") {
		counts := []int{1}
		if cfg.Threads > 1 {
			counts = append(counts, cfg.Threads)
		}
		for _, th := range counts {
			logf("memory read bandwidth, %d thread(s), %d MiB each", th, cfg.MembwBytes>>20)
			r, err := membw.Measure(th, cfg.MembwBytes, 2, cfg.MembwRuns)
			if err != nil {
				fail("membw", err)
				break
			}
			rep.Membw = append(rep.Membw, r)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	cache, err := newModelCache(cfg.cacheDir, cfg.vocab, cfg.Seed)
	if err != nil {
		return nil, err
	}
	// The model the concurrency and serving sections use: the shape's Q8_0,
	// or the bundled model when it cannot be made.
	var mainModel benchModel
	haveMain := false
	if cfg.runs("types") || cfg.runs("concurrent") || cfg.runs("serve") {
		types := cfg.Types
		if !cfg.runs("types") {
			types = nil
		}
		if !slices.Contains(types, "Q8_0") && (cfg.runs("concurrent") || cfg.runs("serve")) {
			types = append(slices.Clone(types), "Q8_0")
		}
		for _, typ := range types {
			logf("model %s %s", cfg.Shape, typ)
			bm, err := cache.synth(cfg.Shape, typ)
			if err != nil {
				fail("model "+cfg.Shape+" "+typ, err)
				continue
			}
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if typ == "Q8_0" {
				mainModel, haveMain = bm, true
			}
			if !cfg.runs("types") || !slices.Contains(cfg.Types, typ) {
				continue
			}
			logf("engine %s", bm.Name)
			r, err := measureEngine(ctx, bm, cfg)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				fail("engine "+bm.Name, err)
				continue
			}
			rep.Engine = append(rep.Engine, r)
		}
	}

	storiesPath, err := bundled.Install(cache.dir)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	stories := benchModel{Name: bundled.Name, Shape: bundled.Name, Type: "F32", Path: storiesPath}
	if cfg.runs("stories") {
		logf("engine %s", stories.Name)
		r, err := measureEngine(ctx, stories, cfg)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fail("engine "+stories.Name, err)
		} else {
			rep.Engine = append(rep.Engine, r)
		}
	}
	if !haveMain {
		mainModel = stories
	}

	if cfg.runs("concurrent") {
		logf("concurrent decode on %s: %v sequences", mainModel.Name, cfg.Seqs)
		r, err := measureConcurrent(ctx, mainModel, cfg)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fail("concurrent", err)
		} else {
			rep.Concurrent = r
		}
	}

	if cfg.runs("serve") {
		models := []benchModel{mainModel}
		if mainModel.Path != stories.Path {
			models = append(models, stories)
		}
		logf("serving through rbee up: %s", strings.Join(benchModelNames(models), ", "))
		r, err := measureServe(ctx, models, cfg, logf)
		rep.Serve = r
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fail("serve", err)
		}
	}
	if cfg.runs("bus") {
		logf("the bus's cost on %s: rbee up --slots %d --replicas %d", stories.Name, cfg.BusSlots, cfg.BusReplicas)
		b, err := measureBus(ctx, stories, cfg, logf)
		rep.Bus = b
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			fail("serve bus", err)
		}
	}
	rep.DurationSeconds = time.Since(start).Seconds()
	rep.figures()
	logf("done")
	return rep, nil
}

func benchModelNames(ms []benchModel) []string {
	names := make([]string, len(ms))
	for i, m := range ms {
		names[i] = m.Name
	}
	return names
}

// formatFloat prints a figure with about three significant digits.
func formatFloat(v float64) string {
	switch a := max(v, -v); {
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}
