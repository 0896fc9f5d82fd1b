package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/cpu"

	"github.com/rbee-dev/rbee/internal/membw"
)

// benchReport is everything one run measured; it is the JSON file.
type benchReport struct {
	Schema          int               `json:"schema"`
	Started         time.Time         `json:"started"`
	DurationSeconds float64           `json:"duration_seconds"`
	System          benchSystem       `json:"system"`
	Config          benchConfig       `json:"config"`
	Membw           []membw.Result    `json:"membw"`
	Engine          []engineResult    `json:"engine"`
	Concurrent      *concurrentResult `json:"concurrent,omitempty"`
	Serve           *serveResult      `json:"serve,omitempty"`
	Bus             *busResult        `json:"bus,omitempty"`
	Figures         []benchFigure     `json:"figures"`
	TargetSource    string            `json:"target_source,omitempty"`
	Errors          []string          `json:"errors,omitempty"`
	targets         map[string]benchTarget
}

type benchSystem struct {
	CPUModel   string   `json:"cpu_model"`
	CPUKind    string   `json:"cpu_kind"` // which row of targets applies
	Features   []string `json:"cpu_features"`
	NumCPU     int      `json:"num_cpu"`
	GOMAXPROCS int      `json:"gomaxprocs"`
	GoVersion  string   `json:"go_version"`
	OS         string   `json:"os"`
	Arch       string   `json:"arch"`
	Commit     string   `json:"git_commit"`
	Dirty      bool     `json:"git_dirty"`
}

// benchFigure is one row of the table.
type benchFigure struct {
	ID     string   `json:"id"`
	Name   string   `json:"name"`
	Value  float64  `json:"value"`
	Text   string   `json:"text,omitempty"` // for figures that are not numbers
	Unit   string   `json:"unit"`
	Target *float64 `json:"target,omitempty"`
	// Bound says which side of Target meets it: "at_least" or "at_most".
	Bound string `json:"bound,omitempty"`
	Met   *bool  `json:"met,omitempty"`
}

// benchTarget is a figure's target: a value it must reach, or one it must
// stay within.
type benchTarget struct {
	Value  float64
	AtMost bool
}

func atLeast(v float64) benchTarget { return benchTarget{Value: v} }
func atMost(v float64) benchTarget  { return benchTarget{Value: v, AtMost: true} }

func (t benchTarget) met(v float64) bool {
	if t.AtMost {
		return v <= t.Value
	}
	return v >= t.Value
}

func (t benchTarget) bound() string {
	if t.AtMost {
		return "at_most"
	}
	return "at_least"
}

// String is the target as the table shows it.
func (t benchTarget) String() string {
	if t.AtMost {
		return "<= " + formatFloat(t.Value)
	}
	return ">= " + formatFloat(t.Value)
}

// benchTargets are the issues' targets per CPU kind. The engine issue's
// table: llama.cpp at 2 threads reaches 250-285 / 145-186 tok/s decode and
// 2,200-2,460 / 750-990 tok/s prompt on the Q8_0 model on the two kinds.
// The jobs issue's: the bus adds under 1 ms to the first token at p50, and
// carries at least 3,500 1-token jobs a second.
var benchTargets = map[string]map[string]benchTarget{
	"intel-xeon": {
		"engine.stories110m-Q8_0.decode": atLeast(190), "engine.stories110m-Q8_0.prompt": atLeast(1100),
		"engine.stories110m-F32.decode": atLeast(45), "engine.stories260K.decode": atLeast(3000),
		"engine.stories110m-Q8_0.bandwidth": atLeast(0.6),
		"engine.stories110m-Q4_0.vs_q8_0":   atLeast(1), "engine.stories110m-Q4_K.vs_q8_0": atLeast(1),
		"serve.stories110m-Q8_0.c4.gain": atLeast(1.6),
		"bus.stories260K.overhead_p50":   atMost(1), "bus.stories260K.nats.jobs_per_second": atLeast(3500),
	},
	"amd-epyc": {
		"engine.stories110m-Q8_0.decode": atLeast(140), "engine.stories110m-Q8_0.prompt": atLeast(600),
		"engine.stories110m-F32.decode": atLeast(35), "engine.stories260K.decode": atLeast(2000),
		"engine.stories110m-Q8_0.bandwidth": atLeast(0.6),
		"engine.stories110m-Q4_0.vs_q8_0":   atLeast(1), "engine.stories110m-Q4_K.vs_q8_0": atLeast(1),
		"serve.stories110m-Q8_0.c4.gain": atLeast(1.6),
		"bus.stories260K.overhead_p50":   atMost(1), "bus.stories260K.nats.jobs_per_second": atLeast(3500),
	},
}

const benchTargetSource = "the engine issue's, per CPU kind; llama.cpp (2 threads) does 145-186 decode, 750-990 prompt " +
	"on the AMD EPYC kind with AVX-512 VNNI, 250-285 and 2,200-2,460 on the Intel kind; " +
	"the jobs issue's for the bus: under 1 ms added to the first token at p50, at least 3,500 1-token jobs/s"

func systemInfo(ctx context.Context) benchSystem {
	s := benchSystem{
		CPUModel: cpuModelName(), Features: cpuFeatures(), NumCPU: runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		Commit: "unknown",
	}
	s.CPUKind = cpuKind(s.CPUModel)
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				s.Commit = kv.Value
			case "vcs.modified":
				s.Dirty = kv.Value == "true"
			}
		}
	}
	if s.Commit == "unknown" { // a test binary or -buildvcs=false: ask git
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if out, err := exec.CommandContext(ctx, "git", "rev-parse", "HEAD").Output(); err == nil {
			s.Commit = strings.TrimSpace(string(out))
			st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output()
			s.Dirty = err == nil && len(st) > 0
		}
	}
	return s
}

// cpuModelName is the first "model name" of /proc/cpuinfo, as the targets
// are quoted by it.
func cpuModelName() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func cpuKind(model string) string {
	switch {
	case strings.Contains(model, "EPYC"):
		return "amd-epyc"
	case strings.Contains(model, "Intel") && strings.Contains(model, "Xeon"):
		return "intel-xeon"
	}
	return "other"
}

// cpuFeatures are the features the engine's kernels choose by.
func cpuFeatures() []string {
	x := cpu.X86
	var out []string
	for _, f := range []struct {
		name string
		has  bool
	}{
		{"AVX", x.HasAVX}, {"AVX2", x.HasAVX2}, {"FMA", x.HasFMA}, {"F16C", x.HasF16C},
		{"AVX-VNNI", x.HasAVXVNNI}, {"AVX512F", x.HasAVX512F}, {"AVX512BW", x.HasAVX512BW},
		{"AVX512DQ", x.HasAVX512DQ}, {"AVX512VL", x.HasAVX512VL}, {"AVX512VNNI", x.HasAVX512VNNI},
		{"AVX512BF16", x.HasAVX512BF16}, {"AVX512VBMI", x.HasAVX512VBMI}, {"AVX512IFMA", x.HasAVX512IFMA},
		{"AMX-TILE", x.HasAMXTile}, {"AMX-INT8", x.HasAMXInt8}, {"AMX-BF16", x.HasAMXBF16},
		{"ASIMD", cpu.ARM64.HasASIMD}, {"ASIMDDP", cpu.ARM64.HasASIMDDP}, {"SVE", cpu.ARM64.HasSVE},
	} {
		if f.has {
			out = append(out, f.name)
		}
	}
	return out
}

// figures turns the raw results into table rows, with targets where this
// CPU kind has them, and fills in the engine results' bandwidth fractions.
func (r *benchReport) figures() {
	r.targets = benchTargets[r.System.CPUKind]
	if r.targets != nil {
		r.TargetSource = benchTargetSource
	}
	r.Figures = nil
	var bw float64 // at the engine's thread count
	for _, m := range r.Membw {
		r.add(fmt.Sprintf("membw.%dt", m.Threads), "memory read bandwidth, "+plural(m.Threads, "thread"), m.Best, "GB/s")
		if m.Threads == r.Config.Threads {
			bw = m.Best
		}
	}
	for i := range r.Engine {
		e := &r.Engine[i]
		id := "engine." + e.Name
		r.add(id+".weights", e.Name+" weights read per token", float64(e.WeightBytes)/1e6, "MB")
		r.add(id+".prompt", fmt.Sprintf("%s prompt (%d tokens)", e.Name, e.PromptTokens), e.PromptTPS, "tok/s")
		decode := fmt.Sprintf("%s decode (%d tokens)", e.Name, e.Generated)
		if e.Generated < e.DecodeTokens {
			decode = fmt.Sprintf("%s decode (%d of %d tokens: EOS)", e.Name, e.Generated, e.DecodeTokens)
		}
		r.add(id+".decode", decode, e.DecodeTPS, "tok/s")
		if bw > 0 {
			e.BandwidthGBps = bw
			e.BandwidthFraction = float64(e.WeightBytes) * e.DecodeTPS / (bw * 1e9)
			r.add(id+".bandwidth", e.Name+" decode / bandwidth limit", e.BandwidthFraction, "fraction")
		}
	}
	for i := range r.Engine {
		e := &r.Engine[i]
		if q8 := r.engineFigure("stories110m-Q8_0"); q8 != nil && q8.DecodeTPS > 0 && e.Shape == q8.Shape && e != q8 &&
			(e.Type == "Q4_0" || e.Type == "Q4_K") {
			r.add("engine."+e.Name+".vs_q8_0", e.Name+" decode / Q8_0 decode", e.DecodeTPS/q8.DecodeTPS, "ratio")
		}
	}
	if c := r.Concurrent; c != nil {
		for _, lv := range c.Levels {
			r.add(fmt.Sprintf("concurrent.%d", lv.Sequences),
				fmt.Sprintf("%s aggregate decode, %s", c.Model.Name, plural(lv.Sequences, "sequence")), lv.TokensPerSecond, "tok/s")
		}
		f := benchFigure{ID: "concurrent.match", Name: "concurrent greedy ids equal solo ids", Text: "yes", Unit: "", Value: 1}
		if !c.MatchSolo {
			f.Text, f.Value = "NO", 0
		}
		r.Figures = append(r.Figures, f)
	}
	if s := r.Serve; s != nil {
		single := map[string]float64{}
		for _, lv := range s.Levels {
			id := fmt.Sprintf("serve.%s.c%d", lv.Model, lv.Clients)
			name := fmt.Sprintf("rbee up %s, %s", lv.Model, plural(lv.Clients, "client"))
			r.add(id+".tps", name+": aggregate", lv.TokensPerSecond, "tok/s")
			if lv.Clients == 1 {
				single[lv.Model] = lv.TokensPerSecond
			} else if one := single[lv.Model]; one > 0 {
				r.add(id+".gain", name+": aggregate / 1 client", lv.TokensPerSecond/one, "ratio")
			}
			r.add(id+".ttft_p50", name+": first token p50", lv.TTFTp50ms, "ms")
			r.add(id+".ttft_p99", name+": first token p99", lv.TTFTp99ms, "ms")
			f := benchFigure{ID: id + ".match", Name: name + ": texts equal solo runs", Text: "yes", Value: 1}
			if !lv.MatchSolo {
				f.Text, f.Value = fmt.Sprintf("NO (%d of %d)", lv.Mismatches, len(lv.texts)), 0
			}
			r.Figures = append(r.Figures, f)
		}
		for _, m := range s.Models {
			if rss := s.WorkerRSSBytes[m.Name]; rss > 0 {
				r.add("serve."+m.Name+".worker_rss", "rbee up "+m.Name+": worker resident memory", float64(rss)/(1<<20), "MiB")
				r.add("serve."+m.Name+".model_size", "rbee up "+m.Name+": model file", float64(s.ModelBytes[m.Name])/(1<<20), "MiB")
			}
		}
	}
	if b := r.Bus; b != nil {
		r.busFigures(b)
	}
}

// busFigures are the rows of the bus section: a 1-token job's first token
// through rbee up and in the engine alone, what the bus adds, a raw NATS
// round trip, and the sustained runs.
func (r *benchReport) busFigures(b *busResult) {
	id := "bus." + b.Model.Name
	name := fmt.Sprintf("%s 1-token job", b.Model.Name)
	if b.HTTPTTFT.N > 0 {
		r.add(id+".http_ttft_p50", name+", HTTP stream through rbee up: first token p50", b.HTTPTTFT.P50ms, "ms")
		r.add(id+".http_ttft_p99", name+", HTTP stream through rbee up: first token p99", b.HTTPTTFT.P99ms, "ms")
		r.add(id+".nats_ttft_p50", name+", NATS request to the queen: first token p50", b.NATSTTFT.P50ms, "ms")
		r.add(id+".nats_ttft_p99", name+", NATS request to the queen: first token p99", b.NATSTTFT.P99ms, "ms")
		r.add(id+".engine_ttft_p50", name+", engine alone: first token p50", b.EngineTTFT.P50ms, "ms")
		r.add(id+".engine_ttft_p99", name+", engine alone: first token p99", b.EngineTTFT.P99ms, "ms")
		r.add(id+".overhead_p50", name+": added by HTTP, queen, JetStream, worker (p50)", b.BusOverheadP50ms, "ms")
		split := b.NATSSplit
		r.add(id+".nats_queued_p50", name+" through NATS: queen's admitting it to a worker's taking it (p50)", split.QueuedP50ms, "ms")
		r.add(id+".nats_worker_p50", name+" through NATS: worker's taking it to its end event (p50)", split.WorkerP50ms, "ms")
		r.add(id+".nats_worker_engine_p50", name+" through NATS: of that, the engine's first token (p50)", split.EngineP50ms, "ms")
		r.add(id+".nats_rest_p50", name+" through NATS: the rest, request in and events back (p50)", split.RestP50ms, "ms")
	}
	if b.NATSRTT.N > 0 {
		r.add("bus.nats_rtt_p50", "raw NATS request/reply on rbee up's server: round trip p50", b.NATSRTT.P50ms, "ms")
		r.add("bus.nats_rtt_p99", "raw NATS request/reply on rbee up's server: round trip p99", b.NATSRTT.P99ms, "ms")
		if b.HTTPTTFT.N > 0 && b.NATSRTT.P50ms > 0 {
			r.add(id+".overhead_rtts", name+": added time / NATS round trip (p50s)", b.BusOverheadP50ms/b.NATSRTT.P50ms, "ratio")
		}
	}
	for _, j := range b.Jobs {
		jid := id + "." + j.Via
		jname := fmt.Sprintf("%ss, %d %s clients, %d slots", name, j.Clients, strings.ToUpper(j.Via), b.Up.Slots)
		r.add(jid+".jobs_per_second", jname+": sustained", j.JobsPerSecond, "jobs/s")
		r.add(jid+".latency_p50", jname+": job latency p50", j.Latency.P50ms, "ms")
		r.Figures = append(r.Figures, benchFigure{ID: jid + ".errors", Name: jname + ": failed jobs",
			Value: float64(j.Errors), Text: strconv.Itoa(j.Errors), Unit: "jobs"})
		if j.Jobs > 0 && j.CPU.MachineBusy > 0 {
			perJob := func(s float64) float64 { return s * 1000 / float64(j.Jobs) }
			r.add(jid+".cpu_up", jname+": CPU per job, rbee up (queen, NATS server)", perJob(j.CPU.UpSeconds), "ms")
			r.add(jid+".cpu_worker", jname+": CPU per job, worker", perJob(j.CPU.WorkerSeconds), "ms")
			r.add(jid+".cpu_clients", jname+": CPU per job, the clients", perJob(j.CPU.ClientSeconds), "ms")
			r.add(jid+".machine_busy", jname+": machine CPU busy", j.CPU.MachineBusy, "fraction")
			r.add(jid+".other_cores", jname+": CPU used by other processes", j.CPU.OtherCores, "cores")
		}
	}
}

// engineFigure returns the engine measurement of the named model, or nil.
func (r *benchReport) engineFigure(name string) *engineResult {
	for i := range r.Engine {
		if r.Engine[i].Name == name {
			return &r.Engine[i]
		}
	}
	return nil
}

func (r *benchReport) add(id, name string, v float64, unit string) {
	f := benchFigure{ID: id, Name: name, Value: v, Unit: unit}
	if t, ok := r.targets[id]; ok {
		met := t.met(v)
		f.Target, f.Bound, f.Met = &t.Value, t.bound(), &met
	}
	r.Figures = append(r.Figures, f)
}

func (r *benchReport) writeTable(w io.Writer) error {
	s := r.System
	dirty := ""
	if s.Dirty {
		dirty = " (modified)"
	}
	fmt.Fprintf(w, "rbee bench%s, %s, %.0fs\n", map[bool]string{true: " --quick"}[r.Config.Quick],
		r.Started.Format(time.RFC3339), r.DurationSeconds)
	fmt.Fprintf(w, "CPU:      %s (kind %s), %d CPUs, GOMAXPROCS %d, engine threads %d\n", s.CPUModel, s.CPUKind, s.NumCPU, s.GOMAXPROCS, r.Config.Threads)
	fmt.Fprintf(w, "features: %s\n", strings.Join(s.Features, " "))
	fmt.Fprintf(w, "build:    %s %s/%s, commit %s%s\n\n", s.GoVersion, s.OS, s.Arch, s.Commit, dirty)
	rows := [][]string{{"FIGURE", "VALUE", "UNIT", "TARGET", "MET"}}
	for _, f := range r.Figures {
		v := f.Text
		if v == "" {
			v = formatFloat(f.Value)
		}
		target, met := "", ""
		if f.Target != nil {
			target, met = benchTarget{Value: *f.Target, AtMost: f.Bound == "at_most"}.String(), "no"
			if *f.Met {
				met = "yes"
			}
		}
		rows = append(rows, []string{f.Name, v, f.Unit, target, met})
	}
	width := make([]int, len(rows[0]))
	for _, row := range rows {
		for i, c := range row {
			width[i] = max(width[i], len(c))
		}
	}
	bw := bufio.NewWriter(w)
	for _, row := range rows {
		// The name and unit read left-aligned, numbers right-aligned.
		line := fmt.Sprintf("%-*s  %*s  %-*s  %*s  %s", width[0], row[0], width[1], row[1], width[2], row[2], width[3], row[3], row[4])
		fmt.Fprintln(bw, strings.TrimRight(line, " "))
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if r.TargetSource != "" {
		fmt.Fprintf(w, "\ntargets: %s\n", r.TargetSource)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "FAILED:  %s\n", e)
	}
	return nil
}

func (r *benchReport) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: encode report: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: write report: %w", err)
	}
	return nil
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
