package hive

import (
	"testing"
	"time"
)

func TestRestartTrackerJitter(t *testing.T) {
	tr := newRestartTracker(RestartPolicy{InitialDelay: time.Second, MaxDelay: 4 * time.Second, Jitter: 0.5, ResetAfter: time.Hour})
	r := 0.0
	tr.rand = func() float64 { return r }
	now := time.Now()
	for i, tc := range []struct {
		rand float64
		want time.Duration
	}{
		{0, time.Second},
		{0.5, 2*time.Second + 500*time.Millisecond},
		{0.999, 4*time.Second + 1998*time.Millisecond},
		{1 - 1e-12, 6 * time.Second}, // capped base, then up to half again
	} {
		r = tc.rand
		got, stop := tr.next(now, 0)
		if stop != "" || got.Round(time.Millisecond) != tc.want {
			t.Errorf("restart %d: %v %q, want %v", i, got, stop, tc.want)
		}
	}
}

func TestRestartTrackerInterval(t *testing.T) {
	tr := newRestartTracker(RestartPolicy{InitialDelay: time.Second, MaxDelay: time.Second, ResetAfter: time.Hour, MaxRestarts: 2, Interval: 10 * time.Minute})
	t0 := time.Now()
	for i, tc := range []struct {
		at time.Duration
		ok bool
	}{
		{0, true},
		{time.Minute, true},
		{2 * time.Minute, false}, // third restart within 10 minutes
		{10 * time.Minute, true}, // the first has left the window
		{10*time.Minute + time.Second, false},
		{11 * time.Minute, true}, // and now the second
	} {
		if _, stop := tr.next(t0.Add(tc.at), 0); (stop == "") != tc.ok {
			t.Errorf("restart %d at +%v: stop %q, want ok %v", i, tc.at, stop, tc.ok)
		}
	}
}

func TestRestartTrackerBreaker(t *testing.T) {
	tr := newRestartTracker(RestartPolicy{InitialDelay: time.Second, MaxDelay: time.Minute, ResetAfter: time.Second,
		BreakerFailures: 3, BreakerWindow: 5 * time.Minute})
	t0 := time.Now()
	for i, tc := range []struct {
		at  time.Duration
		ran time.Duration
		ok  bool
	}{
		{0, 0, true},
		{time.Minute, time.Hour, true},             // a long run resets the backoff, not the breaker
		{5*time.Minute + 30*time.Second, 0, true},  // the first failure has left the window
		{5*time.Minute + 45*time.Second, 0, false}, // the third within five minutes
	} {
		_, stop := tr.next(t0.Add(tc.at), tc.ran)
		if (stop == "") != tc.ok {
			t.Errorf("failure %d at +%v: stop %q, want ok %v", i, tc.at, stop, tc.ok)
		}
		if !tc.ok && stop != "circuit breaker open: 3 failures within 5m0s" {
			t.Errorf("stop reason %q", stop)
		}
	}
}
