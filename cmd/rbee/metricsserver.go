package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/rbee-dev/rbee/hive"
)

// metricsShutdownGrace bounds how long a scrape in progress may finish when
// the component stops.
const metricsShutdownGrace = 2 * time.Second

// metricsActor serves reg on addr's /metrics (and /healthz, for a probe
// that needs no parsing) for hives and workers, which have no HTTP server
// of their own, and returns the URL of /metrics as bound (a port 0 made
// real). It listens at once, so that an address in use fails the start
// instead of a running component. An empty addr serves nothing, at no URL.
func metricsActor(addr string, reg prometheus.Gatherer, log *slog.Logger) (actor, string, error) {
	if addr == "" {
		return actor{"metrics", func(ctx context.Context) error { <-ctx.Done(); return nil }}, "", nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return actor{}, "", fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("serving metrics", "addr", l.Addr().String())
	return actor{"metrics", func(ctx context.Context) error {
		served := make(chan error, 1)
		go func() { served <- srv.Serve(l) }()
		select {
		case err := <-served:
			return fmt.Errorf("metrics listener: %w", err)
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), metricsShutdownGrace)
		defer cancel()
		err := srv.Shutdown(sctx)
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		return err
	}}, "http://" + l.Addr().String() + "/metrics", nil
}

// withWorkers is reg with the metrics of h's workers. A family that
// clashes with one of reg's (a worker of another release, whose runtime
// describes a metric otherwise) is left out of the scrape and logged: it
// must not fail the rest.
func withWorkers(reg prometheus.Gatherer, h *hive.Hive, log *slog.Logger) prometheus.Gatherer {
	return lenientGatherer{gs: prometheus.Gatherers{reg, h.WorkerMetrics()}, log: log}
}

type lenientGatherer struct {
	gs  prometheus.Gatherers
	log *slog.Logger
}

func (g lenientGatherer) Gather() ([]*dto.MetricFamily, error) {
	fams, err := g.gs.Gather()
	if err != nil {
		g.log.Warn("metrics left out of a scrape", "err", err)
	}
	return fams, nil
}

// modelLoadSeconds records how long a worker took to load its model, a
// number only the command that loads it knows.
func modelLoadSeconds(reg prometheus.Registerer, took time.Duration) error {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "rbee", Subsystem: "worker", Name: "model_load_seconds",
		Help: "Time the worker took to load its model file before serving.",
	})
	g.Set(took.Seconds())
	if err := reg.Register(g); err != nil {
		return fmt.Errorf("register: %w", err)
	}
	return nil
}
