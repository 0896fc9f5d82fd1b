package jinja

import (
	"errors"
	"fmt"
	"time"
)

// The limits below bound what one render may cost, so that a template read
// from outside (a chat template inside a model file) can neither crash the
// process (unbounded recursion overflows the Go stack, a fatal error that
// no recover catches) nor hang it or exhaust its memory. They are far above
// what real chat templates use.
const (
	// MaxSteps is the number of nodes and expressions one render may evaluate.
	MaxSteps = 5_000_000
	// MaxDepth bounds the nesting of evaluation, macro calls included.
	MaxDepth = 500
	// MaxValueDepth bounds how deeply printing, comparing or converting a
	// value may descend into lists and dicts; a value that refers to itself
	// is deeper than any bound.
	MaxValueDepth = 100
	// MaxStringBytes bounds any string a render builds, its output included.
	MaxStringBytes = 16 << 20
	// MaxListItems bounds any list a render builds.
	MaxListItems = 1 << 20
	// MaxDuration bounds the wall-clock time of one render.
	MaxDuration = time.Second
)

// ErrLimit is wrapped by every error that reports a render going past one
// of the limits.
var ErrLimit = errors.New("template exceeds a limit")

// limitError is panicked by helpers that have no error result, and turned
// back into an error by render.
type limitError struct{ err error }

func exceeded(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrLimit}, args...)...)
}

func panicLimit(format string, args ...any) {
	panic(limitError{exceeded(format, args...)})
}

// budget is shared by the evaluators of one render.
type budget struct {
	steps    int
	depth    int
	deadline time.Time
}

// enter counts one evaluation step at one more level of nesting; the caller
// calls leave when that level is done.
func (b *budget) enter() error {
	b.depth++
	if b.depth > MaxDepth {
		return exceeded("evaluation nests deeper than %d levels (a macro that calls itself without end?)", MaxDepth)
	}
	return b.step()
}

// step counts one evaluation step.
func (b *budget) step() error {
	b.steps++
	switch {
	case b.steps > MaxSteps:
		return exceeded("more than %d evaluation steps (a loop without end?)", MaxSteps)
	case b.steps%4096 == 0 && time.Now().After(b.deadline):
		return exceeded("rendering took longer than %v", MaxDuration)
	}
	return nil
}

func (b *budget) leave() { b.depth-- }

// checkString panics with a limit error when a string of n bytes would be
// too long; call it before building the string.
func checkString(n int) {
	if n > MaxStringBytes || n < 0 {
		panicLimit("a string of more than %d bytes", MaxStringBytes)
	}
}

// checkList is checkString for the number of items of a list.
func checkList(n int) {
	if n > MaxListItems || n < 0 {
		panicLimit("a list of more than %d items", MaxListItems)
	}
}

// checkValueDepth panics when a walk over a value has gone too deep.
func checkValueDepth(depth int) {
	if depth > MaxValueDepth {
		panicLimit("a value nested deeper than %d levels (one that contains itself?)", MaxValueDepth)
	}
}
