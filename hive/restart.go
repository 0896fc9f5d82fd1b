package hive

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// restartTracker applies a RestartPolicy to one worker's run history, as
// Nomad's restart tracker does for a task.
type restartTracker struct {
	policy   RestartPolicy
	rand     func() float64 // in [0, 1), for jitter
	failures int            // short runs since the backoff was last reset
	recent   []time.Time    // restarts within the policy's interval
	broken   []time.Time    // failures within the breaker's window
}

func newRestartTracker(p RestartPolicy) *restartTracker {
	return &restartTracker{policy: p, rand: rand.Float64}
}

// next is told that a run ended at now after lasting ran (0 for a start that
// failed) and returns the delay before the next start, or why the worker is
// to stay down: it used up its restarts, or the breaker opened.
func (t *restartTracker) next(now time.Time, ran time.Duration) (time.Duration, string) {
	p := t.policy
	if ran >= p.ResetAfter {
		t.failures = 0
	}
	if p.BreakerFailures > 0 {
		t.broken = append(within(t.broken, now, p.BreakerWindow), now)
		if len(t.broken) >= p.BreakerFailures {
			return 0, fmt.Sprintf("circuit breaker open: %d failures within %v", len(t.broken), p.BreakerWindow)
		}
	}
	if p.MaxRestarts > 0 {
		t.recent = within(t.recent, now, p.Interval)
		if len(t.recent) >= p.MaxRestarts {
			return 0, fmt.Sprintf("restarted %d times within %v", len(t.recent), p.Interval)
		}
		t.recent = append(t.recent, now)
	}
	return t.backoff(), ""
}

// refused is told that the preflight refused a restart and returns the
// delay before the next try: longer each time, as after a failure, but
// neither the breaker nor MaxRestarts counts it, since the worker did not
// fail; the machine was short of room.
func (t *restartTracker) refused() time.Duration { return t.backoff() }

// backoff is the delay after another short run or refusal.
func (t *restartTracker) backoff() time.Duration {
	p := t.policy
	d := p.InitialDelay
	for i := 0; i < t.failures && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	t.failures++
	return d + time.Duration(t.rand()*p.Jitter*float64(d))
}

// within keeps the times of ts less than window before now.
func within(ts []time.Time, now time.Time, window time.Duration) []time.Time {
	kept := ts[:0]
	for _, at := range ts {
		if now.Sub(at) < window {
			kept = append(kept, at)
		}
	}
	return kept
}
