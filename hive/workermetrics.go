package hive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/rbee-dev/rbee/schemas"
)

// workerMetricsAddr is the metrics listener handed to workers
// (Config.WorkerMetrics): a port the kernel picks, on loopback, where only
// this machine reaches it.
const workerMetricsAddr = "127.0.0.1:0"

// Bounds of one scrape of one worker: a worker that does not answer in
// time is left out of that scrape, not waited for.
const (
	workerScrapeTimeout   = 3 * time.Second
	maxWorkerMetricsBytes = 16 << 20
)

// The labels the hive adds to each of a worker's series.
const (
	labelWorkerID = "worker_id"
	labelModel    = "model"
)

// scrapeAccept asks for the delimited protobuf format, which keeps types
// exactly; a text answer is read as well.
var scrapeAccept = string(expfmt.NewFormat(expfmt.TypeProtoDelim)) + ";q=0.7," + string(expfmt.NewFormat(expfmt.TypeTextPlain)) + ";q=0.3"

// workerScraper gathers the metrics of the workers a hive supervises.
type workerScraper struct {
	h      *Hive
	client *http.Client
}

func newWorkerScraper(h *Hive) *workerScraper {
	return &workerScraper{h: h, client: &http.Client{
		Timeout: workerScrapeTimeout,
		// Nothing but the worker itself: no proxy, no redirect elsewhere,
		// and no idle connection outliving the scrape.
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("a worker's metrics do not redirect")
		},
	}}
}

// WorkerMetrics gathers, at each call, the metrics of every live worker
// the hive supervises that serves them (Config.WorkerMetrics), each series
// labelled with its worker_id and model, and families of the same name
// merged. A worker that does not answer is left out, and counted in
// rbee_hive_worker_scrape_errors_total; Gather returns no error, so that
// one worker never fails the whole scrape. Serve it with the hive's
// registry, in prometheus.Gatherers.
func (h *Hive) WorkerMetrics() prometheus.Gatherer { return h.scraper }

// scrapeTarget is one worker to scrape.
type scrapeTarget struct{ id, model, url string }

// metricsTargets are the live workers whose current process told where
// its metrics are.
func (h *Hive) metricsTargets() []scrapeTarget {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []scrapeTarget
	for _, p := range h.order {
		if !p.running() || p.metricsURL == "" {
			continue
		}
		if st := p.w.snapshot(); st.State == StateRunning && st.PID == p.metricsPID {
			out = append(out, scrapeTarget{id: st.ID, model: st.Model, url: p.metricsURL})
		}
	}
	return out
}

// noteMetricsURL keeps where p's process serves its metrics, from its
// heartbeat hb. Anyone holding the worker identity can publish a
// heartbeat: only a URL on loopback, from the process the hive runs as
// that worker, is taken, and rebuilt from its address, so that the hive
// never fetches a URL of someone else's choosing. h.mu is held.
func (h *Hive) noteMetricsURL(p *proc, hb schemas.WorkerHeartbeat) {
	pid := p.w.snapshot().PID
	if hb.MetricsURL == "" || pid == 0 || hb.PID != pid {
		return
	}
	u, ok := loopbackMetricsURL(hb.MetricsURL)
	if !ok {
		if p.metricsPID != pid { // once per process
			h.log.Warn("a worker's heartbeat names a metrics URL off loopback; its metrics are not scraped",
				"worker_id", hb.WorkerID, "metrics_url", hb.MetricsURL)
			p.metricsURL, p.metricsPID = "", pid
		}
		return
	}
	p.metricsURL, p.metricsPID = u, pid
}

// loopbackMetricsURL is raw as http://IP:PORT/metrics when it names an IP
// address on loopback, a port and that path, and nothing else.
func loopbackMetricsURL(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "http" || u.User != nil || u.Path != "/metrics" || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	ip := net.ParseIP(u.Hostname())
	port, err := strconv.Atoi(u.Port())
	if ip == nil || !ip.IsLoopback() || err != nil || port < 1 || port > 65535 {
		return "", false
	}
	return "http://" + net.JoinHostPort(ip.String(), strconv.Itoa(port)) + "/metrics", true
}

// Gather scrapes every target at once and merges what they answered.
func (s *workerScraper) Gather() ([]*dto.MetricFamily, error) {
	targets := s.h.metricsTargets()
	got := make([][]*dto.MetricFamily, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			fams, err := s.scrape(t.url)
			if err != nil {
				s.h.metrics.scrapeErrs.WithLabelValues(t.model).Inc()
				s.h.log.Debug("scrape a worker's metrics", "worker_id", t.id, "model", t.model, "err", err)
				return
			}
			got[i] = fams
		})
	}
	wg.Wait()
	byName := map[string]*dto.MetricFamily{}
	for i, t := range targets {
		for _, f := range got[i] {
			merged, ok := byName[f.GetName()]
			switch {
			case !ok:
				merged = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type}
				byName[f.GetName()] = merged
			case merged.GetType() != f.GetType():
				// Workers of different releases: the first one's kind
				// stands, the other's series are left out.
				s.h.metrics.scrapeErrs.WithLabelValues(t.model).Inc()
				continue
			}
			for _, m := range f.Metric {
				merged.Metric = append(merged.Metric, labelled(m, t))
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, nil
}

// labelled is m with worker_id and model of t, in place of any the
// worker gave it (rbee_worker_queue_jobs has a model of its own).
func labelled(m *dto.Metric, t scrapeTarget) *dto.Metric {
	labels := make([]*dto.LabelPair, 0, len(m.Label)+2)
	for _, l := range m.Label {
		if n := l.GetName(); n != labelWorkerID && n != labelModel {
			labels = append(labels, l)
		}
	}
	labels = append(labels, labelPair(labelWorkerID, t.id), labelPair(labelModel, t.model))
	slices.SortFunc(labels, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	m.Label = labels
	return m
}

func labelPair(name, value string) *dto.LabelPair { return &dto.LabelPair{Name: &name, Value: &value} }

// scrape fetches and decodes one worker's metrics.
func (s *workerScraper) scrape(u string) ([]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), workerScrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", scrapeAccept)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	format := expfmt.ResponseFormat(resp.Header)
	if format.FormatType() == expfmt.TypeUnknown {
		return nil, fmt.Errorf("GET %s: content type %q", u, resp.Header.Get("Content-Type"))
	}
	// Past the bound the reads fail, and so does the decode.
	dec := expfmt.NewDecoder(http.MaxBytesReader(nil, resp.Body, maxWorkerMetricsBytes), format)
	var fams []*dto.MetricFamily
	for {
		f := &dto.MetricFamily{}
		err := dec.Decode(f)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("decode %s: %w", u, err)
		}
		fams = append(fams, f)
	}
	return fams, nil
}
