package infer

import "sync"

// rowRunner is one parallel operation: the pool calls runRows on disjoint
// row ranges that together cover the whole operation.
type rowRunner interface {
	runRows(lo, hi int)
}

type chunk struct {
	op     rowRunner
	lo, hi int
	done   *sync.WaitGroup
}

// pool is a fixed set of goroutines that split the rows of each operation.
// Operations from several sessions may run at once: chunks share one queue.
// Nothing is allocated per operation, so decode stays allocation-free.
type pool struct {
	threads int
	chunks  chan chunk
	stopped sync.WaitGroup
}

func newPool(threads int) *pool {
	if threads < 1 {
		threads = 1
	}
	p := &pool{threads: threads, chunks: make(chan chunk, 64)}
	for range threads - 1 {
		p.stopped.Add(1)
		go func() {
			defer p.stopped.Done()
			for c := range p.chunks {
				c.op.runRows(c.lo, c.hi)
				c.done.Done()
			}
		}()
	}
	return p
}

// run splits n rows into one chunk per thread and returns when all are done.
// The calling goroutine works on the first chunk itself. done must not be
// shared by concurrent calls.
func (p *pool) run(op rowRunner, n int, done *sync.WaitGroup) {
	parts := min(p.threads, n)
	if parts <= 1 {
		op.runRows(0, n)
		return
	}
	step := (n + parts - 1) / parts
	for lo := step; lo < n; lo += step {
		done.Add(1)
		p.chunks <- chunk{op: op, lo: lo, hi: min(lo+step, n), done: done}
	}
	op.runRows(0, min(step, n))
	done.Wait()
}

func (p *pool) close() {
	close(p.chunks)
	p.stopped.Wait()
}
