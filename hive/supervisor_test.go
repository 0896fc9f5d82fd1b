package hive

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

var errCrashed = errors.New("exit status 1")

// fakeProcess stands in for a worker process in the supervisor's unit
// tests: it exits when its script says so.
type fakeProcess struct {
	pid    int
	exit   chan error
	once   sync.Once
	onTerm func(p *fakeProcess) // what SIGTERM does; nil ignores it
	sigErr error                // Signal's answer

	mu      sync.Mutex
	signals []os.Signal
	killed  []time.Time
}

func (p *fakeProcess) PID() int    { return p.pid }
func (p *fakeProcess) Wait() error { return <-p.exit }

func (p *fakeProcess) end(err error) { p.once.Do(func() { p.exit <- err }) }

func (p *fakeProcess) Signal(sig os.Signal) error {
	p.mu.Lock()
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	if p.sigErr != nil {
		return p.sigErr
	}
	if p.onTerm != nil {
		p.onTerm(p)
	}
	return nil
}

func (p *fakeProcess) Kill() error {
	p.mu.Lock()
	p.killed = append(p.killed, time.Now())
	p.mu.Unlock()
	p.end(errors.New("signal: killed"))
	return nil
}

// fakeStarter starts fake processes made by next, which sees the start's
// number from 0; a nil process fails the start.
type fakeStarter struct {
	next func(n int) *fakeProcess

	mu     sync.Mutex
	starts []time.Time
	procs  []*fakeProcess
}

func (s *fakeStarter) start(_ context.Context, spec workerSpec) (process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.starts)
	s.starts = append(s.starts, time.Now())
	p := s.next(n)
	if p == nil {
		return nil, errors.New("start worker: exec format error")
	}
	p.pid = 1000 + n
	if p.exit == nil {
		p.exit = make(chan error, 1)
	}
	s.procs = append(s.procs, p)
	return p, nil
}

// gaps returns the time between consecutive starts.
func (s *fakeStarter) gaps() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(s.starts); i++ {
		out = append(out, s.starts[i].Sub(s.starts[i-1]))
	}
	return out
}

func (s *fakeStarter) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.starts)
}

// crashAfter makes processes that exit with status 1 after d.
func crashAfter(d time.Duration) func(int) *fakeProcess {
	return func(int) *fakeProcess {
		p := &fakeProcess{exit: make(chan error, 1)}
		time.AfterFunc(d, func() { p.end(errCrashed) })
		return p
	}
}

func newTestWorker(s starter, policy RestartPolicy, grace time.Duration) *worker {
	return &worker{
		spec:     workerSpec{ID: "h-m-0", Model: "m"},
		starter:  s,
		policy:   policy,
		grace:    grace,
		log:      slog.New(slog.DiscardHandler),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "restarts"}),
		running:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "running"}),
		status:   WorkerStatus{ID: "h-m-0", Model: "m", State: StatePending},
	}
}

// runWorker runs w until the returned stop is called, which waits for run
// to return.
func runWorker(w *worker) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func secs(ds ...float64) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = time.Duration(d * float64(time.Second))
	}
	return out
}

func TestSupervisorBackoffDoublesUpToMax(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &fakeStarter{next: crashAfter(0)}
		w := newTestWorker(s, RestartPolicy{InitialDelay: time.Second, MaxDelay: 8 * time.Second, ResetAfter: time.Minute}, time.Second)
		stop := runWorker(w)
		time.Sleep(30 * time.Second) // starts at 0, 1, 3, 7, 15 and 23 s
		stop()
		if got, want := s.gaps(), secs(1, 2, 4, 8, 8); !slices.Equal(got, want) {
			t.Errorf("gaps between starts %v, want %v", got, want)
		}
		st := w.snapshot()
		if st.Restarts != 5 || st.State != StateStopped || st.LastExit != "exit status 1" {
			t.Errorf("status %+v, want 5 restarts, stopped after exit status 1", st)
		}
	})
}

func TestSupervisorLongRunResetsBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Runs of 0, 0, 0, 2 minutes, 0, 0 seconds: the long run resets the delay.
		runs := secs(0, 0, 0, 120, 0, 0, 1000)
		s := &fakeStarter{next: func(n int) *fakeProcess { return crashAfter(runs[n])(n) }}
		w := newTestWorker(s, RestartPolicy{InitialDelay: time.Second, MaxDelay: time.Minute, ResetAfter: time.Minute}, time.Second)
		stop := runWorker(w)
		time.Sleep(200 * time.Second)
		stop()
		if got, want := s.gaps(), secs(1, 2, 4, 120+1, 2, 4); !slices.Equal(got, want) {
			t.Errorf("gaps between starts %v, want %v", got, want)
		}
	})
}

func TestSupervisorGivesUpAfterMaxRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &fakeStarter{next: crashAfter(0)}
		w := newTestWorker(s, RestartPolicy{InitialDelay: time.Second, MaxDelay: time.Second, ResetAfter: time.Minute, MaxRestarts: 3, Interval: time.Hour}, time.Second)
		stop := runWorker(w)
		time.Sleep(time.Hour)
		synctest.Wait()
		st := w.snapshot()
		if s.count() != 4 || st.State != StateFailed || st.Restarts != 3 {
			t.Errorf("%d starts, status %+v: want 4 starts and failed after 3 restarts", s.count(), st)
		}
		stop()
		if st := w.snapshot(); st.State != StateFailed {
			t.Errorf("state %s after stop, want failed", st.State)
		}
	})
}

func TestSupervisorRetriesFailedStarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &fakeStarter{next: func(n int) *fakeProcess {
			if n < 2 {
				return nil
			}
			return &fakeProcess{onTerm: func(p *fakeProcess) { p.end(nil) }}
		}}
		w := newTestWorker(s, RestartPolicy{InitialDelay: time.Second, MaxDelay: time.Minute, ResetAfter: time.Minute}, time.Second)
		stop := runWorker(w)
		time.Sleep(10 * time.Second)
		synctest.Wait()
		st := w.snapshot()
		if st.State != StateRunning || st.PID != 1002 || st.Restarts != 2 || st.LastExit != "start worker: exec format error" {
			t.Errorf("status %+v, want running as pid 1002 after 2 failed starts", st)
		}
		if got, want := s.gaps(), secs(1, 2); !slices.Equal(got, want) {
			t.Errorf("gaps between starts %v, want %v", got, want)
		}
		stop()
	})
}

func TestSupervisorStop(t *testing.T) {
	exitAfter := func(d time.Duration) func(*fakeProcess) {
		return func(p *fakeProcess) { time.AfterFunc(d, func() { p.end(nil) }) }
	}
	for _, tc := range []struct {
		name     string
		proc     *fakeProcess
		took     time.Duration // from stop to return
		lastExit string
	}{
		{"exits within grace", &fakeProcess{onTerm: exitAfter(3 * time.Second)}, 3 * time.Second, "exit status 0"},
		{"ignores SIGTERM", &fakeProcess{}, 10 * time.Second, "signal: killed"},
		{"exits just after grace", &fakeProcess{onTerm: exitAfter(11 * time.Second)}, 10 * time.Second, "signal: killed"},
		{"cannot be signalled", &fakeProcess{sigErr: errors.New("operation not permitted")}, 0, "signal: killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &fakeStarter{next: func(int) *fakeProcess { return tc.proc }}
				w := newTestWorker(s, DefaultRestartPolicy(), 10*time.Second)
				stop := runWorker(w)
				synctest.Wait()
				began := time.Now()
				stop()
				if took := time.Since(began); took != tc.took {
					t.Errorf("stop took %v, want %v", took, tc.took)
				}
				p := tc.proc
				if !slices.Equal(p.signals, []os.Signal{stopSignal}) {
					t.Errorf("signals %v, want one %v", p.signals, stopSignal)
				}
				// The process group is killed once the worker is gone in every
				// case, to remove what it left behind.
				if len(p.killed) == 0 || !p.killed[len(p.killed)-1].Equal(began.Add(tc.took)) {
					t.Errorf("kills at %v, want the last at stop+%v", p.killed, tc.took)
				}
				st := w.snapshot()
				if st.State != StateStopped || st.LastExit != tc.lastExit || st.PID != 0 || s.count() != 1 {
					t.Errorf("status %+v after %d starts, want stopped once with %q", st, s.count(), tc.lastExit)
				}
			})
		})
	}
}

func TestSupervisorStopDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &fakeStarter{next: crashAfter(0)}
		w := newTestWorker(s, RestartPolicy{InitialDelay: time.Hour, MaxDelay: time.Hour, ResetAfter: time.Minute}, time.Second)
		stop := runWorker(w)
		synctest.Wait()
		if st := w.snapshot(); st.State != StateBackoff {
			t.Fatalf("state %s, want backoff", st.State)
		}
		began := time.Now()
		stop()
		if took := time.Since(began); took != 0 {
			t.Errorf("stop took %v during backoff, want 0", took)
		}
		if st := w.snapshot(); st.State != StateStopped || s.count() != 1 {
			t.Errorf("state %s after %d starts, want stopped after 1", st.State, s.count())
		}
	})
}

func TestSupervisorStopSkipsGraceWhenTold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &fakeProcess{} // ignores SIGTERM
		s := &fakeStarter{next: func(int) *fakeProcess { return p }}
		w := newTestWorker(s, DefaultRestartPolicy(), time.Hour)
		skip := make(chan struct{})
		w.skipGrace = skip
		w.stops = &stopCounters{graceful: prometheus.NewCounter(prometheus.CounterOpts{Name: "g"}), forced: prometheus.NewCounter(prometheus.CounterOpts{Name: "f"})}
		stop := runWorker(w)
		synctest.Wait()
		began := time.Now()
		go func() {
			time.Sleep(3 * time.Second)
			close(skip)
		}()
		stop()
		if took := time.Since(began); took != 3*time.Second {
			t.Errorf("stop took %v, want the 3 s until the grace was skipped", took)
		}
		if st := w.snapshot(); st.State != StateStopped || st.LastExit != "signal: killed" {
			t.Errorf("status %+v, want stopped by a kill", st)
		}
		var m dto.Metric
		if err := w.stops.forced.Write(&m); err != nil || m.GetCounter().GetValue() != 1 {
			t.Errorf("force-killed count %v (%v), want 1", m.GetCounter().GetValue(), err)
		}
	})
}

// A restart the preflight refuses waits, longer each time, and tries
// again; the refusals do not open the breaker, which counts failures.
func TestSupervisorRestartWaitsForThePreflight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &fakeStarter{next: func(n int) *fakeProcess {
			if n == 0 {
				return crashAfter(0)(n)
			}
			return &fakeProcess{onTerm: func(p *fakeProcess) { p.end(nil) }}
		}}
		w := newTestWorker(s, RestartPolicy{InitialDelay: time.Second, MaxDelay: time.Minute, ResetAfter: time.Minute}, time.Second)
		var asked []time.Time
		w.admit = func() error {
			asked = append(asked, time.Now())
			if len(asked) <= 6 {
				return errors.New("INSUFFICIENT_RAM")
			}
			return nil
		}
		began := time.Now()
		stop := runWorker(w)
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		// After the crash 1 s, then 2, 4, ... as refusals go on, capped at a minute.
		var gaps []time.Duration
		for _, at := range asked {
			gaps = append(gaps, at.Sub(began))
			began = at
		}
		if want := secs(1, 2, 4, 8, 16, 32, 60); !slices.Equal(gaps, want) {
			t.Errorf("preflight asked after %v, want %v", gaps, want)
		}
		st := w.snapshot()
		if s.count() != 2 || st.State != StateRunning || st.Restarts != 1 {
			t.Errorf("%d starts, status %+v: want running after one restart, the breaker shut", s.count(), st)
		}
		stop()
	})
}
