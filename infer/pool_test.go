package infer

import (
	"sync/atomic"
	"testing"
	"time"
)

// countRows counts how often each row was run.
type countRows struct{ seen []atomic.Int32 }

func (c *countRows) runRows(lo, hi, _ int) {
	for i := lo; i < hi; i++ {
		c.seen[i].Add(1)
	}
}

// A resting pool's threads go to sleep without waiting out their spin, and
// the next operation wakes them: every row runs exactly once before and
// after.
func TestPoolRestsAndWakes(t *testing.T) {
	p := newPool(3)
	defer p.close()
	for round := range 3 {
		c := &countRows{seen: make([]atomic.Int32, 1000)}
		p.run(c, len(c.seen), 1)
		for i := range c.seen {
			if n := c.seen[i].Load(); n != 1 {
				t.Fatalf("round %d: row %d ran %d times", round, i, n)
			}
		}
		p.rest()
		deadline := time.Now().Add(10 * time.Second)
		for {
			p.sleepMu.Lock()
			asleep := p.sleepers
			p.sleepMu.Unlock()
			if asleep == p.threads-1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d of %d threads asleep after rest", round, asleep, p.threads-1)
			}
			time.Sleep(time.Millisecond)
		}
		if p.resting.Load() != true {
			t.Fatal("rest did not stick")
		}
	}
	p.run(&countRows{seen: make([]atomic.Int32, 10)}, 10, 1)
	if p.resting.Load() {
		t.Error("run left the pool resting")
	}
}
