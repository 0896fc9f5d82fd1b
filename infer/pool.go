package infer

import (
	"sync"
	"sync/atomic"
	"time"
)

// rowRunner is one parallel operation: the pool calls runRows on disjoint
// row ranges that together cover the whole operation. worker says which of
// the pool's threads runs the range, so an operation can give each thread
// its own scratch.
type rowRunner interface {
	runRows(lo, hi, worker int)
}

// spinTime bounds how long an idle thread polls for the next operation
// before it sleeps. Waking a sleeping thread costs tens of microseconds or
// more, and a forward pass issues an operation every few: measured on the
// 134M model, a 30 µs budget decoded 80 tok/s, 300 µs 121 and 1.5 ms 147.
// So threads spin through everything between operations, sampling between
// steps included, and sleep only once the engine is idle.
const spinTime = time.Millisecond

// spin polls done until it reports true or spinTime has passed.
func spin(done func() bool) bool {
	start := time.Now()
	for {
		for range 1024 {
			if done() {
				return true
			}
		}
		if time.Since(start) > spinTime {
			return false
		}
	}
}

// pool is a fixed set of threads that split the rows of each operation.
// The calling goroutine is thread 0 and works on the first share itself;
// the others poll a generation counter, so handing out an operation costs
// an atomic store instead of a channel send and a wake-up. Operations from
// several callers are serialised. Nothing is allocated per operation, so
// decode stays allocation-free.
type pool struct {
	threads int
	mu      sync.Mutex // one operation at a time

	op      rowRunner
	n       int
	chunk   int           // rows per chunk of the current operation
	next    atomic.Int64  // first row of the next chunk to take
	gen     atomic.Uint64 // bumped once per operation (and once to stop)
	pending atomic.Int32  // threads still working on the current operation
	stop    atomic.Bool
	// resting: the engine has nothing to run, so idle threads sleep at
	// once rather than spin, leaving the CPU to the rest of the process
	// (publishing the tokens just made) and to other processes. run
	// clears it.
	resting atomic.Bool

	sleepMu  sync.Mutex
	wake     *sync.Cond // threads waiting for an operation
	sleepers int
	finished *sync.Cond // the caller waiting for the last share
	waiting  bool
	stopped  sync.WaitGroup
}

func newPool(threads int) *pool {
	p := &pool{threads: max(threads, 1)}
	p.wake = sync.NewCond(&p.sleepMu)
	p.finished = sync.NewCond(&p.sleepMu)
	for w := 1; w < p.threads; w++ {
		p.stopped.Add(1)
		go p.loop(w)
	}
	return p
}

// chunksPerThread splits each operation finer than one share per thread, so
// that a thread the machine slows down does not hold up the others: whoever
// is free takes the next chunk. Results do not depend on the split: every
// operation's rows are computed independently of each other.
const chunksPerThread = 4

// work runs chunks of the current operation until none is left.
func (p *pool) work(w int) {
	for {
		lo := int(p.next.Add(int64(p.chunk))) - p.chunk
		if lo >= p.n {
			return
		}
		p.op.runRows(lo, min(lo+p.chunk, p.n), w)
	}
}

// run splits n rows between the threads and returns when all are done.
// Operations smaller than minRows per thread run on the caller alone:
// below that, the hand-off costs more than the work.
func (p *pool) run(op rowRunner, n, minRows int) {
	if p.threads == 1 || n < 2*max(minRows, 1) {
		op.runRows(0, n, 0)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.op, p.n = op, n
	p.chunk = max(minRows, (n+p.threads*chunksPerThread-1)/(p.threads*chunksPerThread))
	p.next.Store(0)
	p.pending.Store(int32(p.threads - 1))
	p.resting.Store(false)
	p.gen.Add(1)
	p.sleepMu.Lock()
	if p.sleepers > 0 {
		p.wake.Broadcast()
	}
	p.sleepMu.Unlock()
	p.work(0)
	p.awaitShares()
	p.op = nil
}

// awaitShares returns once every thread has finished its share: spinning
// first, and sleeping if the others are slow (a machine busy with other
// work may not be running them at all).
func (p *pool) awaitShares() {
	if spin(func() bool { return p.pending.Load() == 0 }) {
		return
	}
	p.sleepMu.Lock()
	defer p.sleepMu.Unlock()
	p.waiting = true
	for p.pending.Load() != 0 {
		p.finished.Wait()
	}
	p.waiting = false
}

func (p *pool) loop(w int) {
	defer p.stopped.Done()
	var seen uint64 // the pool starts at generation 0, even if an operation came before this thread
	for {
		g := p.await(seen)
		if p.stop.Load() {
			return
		}
		seen = g
		p.work(w)
		if p.pending.Add(-1) == 0 {
			p.sleepMu.Lock()
			if p.waiting {
				p.finished.Signal()
			}
			p.sleepMu.Unlock()
		}
	}
}

// rest lets idle threads sleep now instead of spinning for the next
// operation: there will be none soon.
func (p *pool) rest() { p.resting.Store(true) }

// await returns the generation after seen, spinning first (unless the pool
// rests) and then sleeping.
func (p *pool) await(seen uint64) uint64 {
	if spin(func() bool { return p.gen.Load() != seen || p.resting.Load() }) {
		if g := p.gen.Load(); g != seen {
			return g
		}
	}
	p.sleepMu.Lock()
	defer p.sleepMu.Unlock()
	for {
		if g := p.gen.Load(); g != seen {
			return g
		}
		p.sleepers++
		p.wake.Wait()
		p.sleepers--
	}
}

func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stop.Store(true)
	p.sleepMu.Lock()
	p.gen.Add(1)
	p.wake.Broadcast()
	p.sleepMu.Unlock()
	p.stopped.Wait()
}
