package hive

import (
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
}

func newRestartTracker(p RestartPolicy) *restartTracker {
	return &restartTracker{policy: p, rand: rand.Float64}
}

// next is told that a run ended at now after lasting ran (0 for a start that
// failed) and returns the delay before the next start, or false when the
// worker has used up its restarts.
func (t *restartTracker) next(now time.Time, ran time.Duration) (time.Duration, bool) {
	p := t.policy
	if ran >= p.ResetAfter {
		t.failures = 0
	}
	if p.MaxRestarts > 0 {
		kept := t.recent[:0]
		for _, at := range t.recent {
			if now.Sub(at) < p.Interval {
				kept = append(kept, at)
			}
		}
		t.recent = kept
		if len(t.recent) >= p.MaxRestarts {
			return 0, false
		}
		t.recent = append(t.recent, now)
	}
	d := p.InitialDelay
	for i := 0; i < t.failures && d < p.MaxDelay; i++ {
		d *= 2
	}
	d = min(d, p.MaxDelay)
	t.failures++
	return d + time.Duration(t.rand()*p.Jitter*float64(d)), true
}
