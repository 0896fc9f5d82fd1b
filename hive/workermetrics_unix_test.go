//go:build unix

package hive

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// series flattens families into name{k=v,...} → value, labels sorted.
func series(fams []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

// The hive's WorkerMetrics holds each live worker's metrics, labelled with
// the worker's ID and model (the hive's model, over the worker's own), the
// families of both workers merged into one each: lint-clean next to the
// hive's own. ReloadWorkers reaches every worker process.
func TestHiveGathersItsWorkersMetrics(t *testing.T) {
	f := newRealHive(t, "metrics", func(c *Config) {
		c.WorkerMetrics = true
		c.Models[0].Replicas = 2
	})
	f.run()
	f.waitReady(2)
	all := prometheus.Gatherers{f.reg, f.h.WorkerMetrics()}
	want := map[string]float64{}
	for _, id := range []string{"test-hive-tiny_1b-0", "test-hive-tiny_1b-1"} {
		want["rbee_worker_jobs_total{model=tiny:1b,outcome=completed,worker_id="+id+"}"] = 2
		want["rbee_worker_queue_jobs{model=tiny:1b,state=waiting,worker_id="+id+"}"] = 3
		want["fake_reloads_total{model=tiny:1b,worker_id="+id+"}"] = 0
	}
	check := func(want map[string]float64) func() error {
		return func() error {
			fams, err := all.Gather()
			if err != nil {
				return err
			}
			got := series(fams)
			for k, v := range want {
				if g, ok := got[k]; !ok || g != v {
					return fmt.Errorf("%s = %v (%v), want %v; have %v", k, g, ok, v, got)
				}
			}
			return nil
		}
	}
	checkFor(t, waitFor, check(want))
	fams, err := f.h.WorkerMetrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range fams {
		if fam.GetName() == "rbee_worker_jobs_total" && len(fam.GetMetric()) != 2 {
			t.Errorf("rbee_worker_jobs_total holds %d series, want one per worker in one family", len(fam.GetMetric()))
		}
	}
	problems, err := testutil.GatherAndLint(all)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
	if n := testutil.ToFloat64(f.h.metrics.scrapeErrs.WithLabelValues("tiny:1b")); n != 0 {
		t.Errorf("%v scrape errors of workers that answer", n)
	}

	if n := f.h.ReloadWorkers(); n != 2 {
		t.Errorf("ReloadWorkers asked %d workers, want 2", n)
	}
	for k := range want {
		if strings.HasPrefix(k, "fake_reloads_total") {
			want[k] = 1
		}
	}
	checkFor(t, waitFor, check(want))
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, f.started())
}

// A worker whose metrics do not answer is left out and counted; the
// gathering does not fail.
func TestHiveCountsWorkersThatDoNotAnswer(t *testing.T) {
	f := newRealHive(t, "metrics", func(c *Config) {
		c.WorkerMetrics = true
		c.ExtraEnv = append(c.ExtraEnv, envMetrics+"=dead")
	})
	f.run()
	f.waitReady(1)
	checkFor(t, waitFor, func() error {
		fams, err := f.h.WorkerMetrics().Gather()
		if err != nil || len(fams) != 0 {
			return fmt.Errorf("gathered %d families (%v), want none and no error", len(fams), err)
		}
		if n := testutil.ToFloat64(f.h.metrics.scrapeErrs.WithLabelValues("tiny:1b")); n < 1 {
			return errors.New("no scrape error counted")
		}
		return nil
	})
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, f.started())
}
