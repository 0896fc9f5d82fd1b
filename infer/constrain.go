package infer

import (
	"errors"
	"sync"

	"github.com/rbee-dev/rbee/infer/grammar"
)

// ErrConstraint fails a constrained generation the grammar cannot go on
// with: no token of the vocabulary continues the output.
var ErrConstraint = errors.New("constrained generation")

// maxCheckers bounds the grammars a model keeps masks for (each at most
// grammar's mask budget).
const maxCheckers = 8

// grammars keeps the model's vocabulary as the grammar automaton reads it,
// made on first use, and a checker per recent grammar, so that requests
// with the same response format share their masks.
type grammars struct {
	mu       sync.Mutex
	vocab    *grammar.Vocab
	checkers map[string]*grammar.Checker
	order    []string // least recently used first
}

// checker returns the checker of g for the model's vocabulary.
func (m *Model) checker(g *grammar.Grammar) *grammar.Checker {
	c := &m.grammars
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.vocab == nil {
		pieces := make([][]byte, m.hp.VocabSize)
		var eog []int32
		for id := range pieces {
			pieces[id] = m.tok.Piece(int32(id))
			if m.tok.IsEOG(int32(id)) {
				eog = append(eog, int32(id))
			}
		}
		c.vocab = grammar.NewVocab(pieces, eog)
		c.checkers = map[string]*grammar.Checker{}
	}
	key := g.Key()
	for i, k := range c.order {
		if k == key {
			c.order = append(append(c.order[:i:i], c.order[i+1:]...), key)
			return c.checkers[key]
		}
	}
	if len(c.order) == maxCheckers {
		delete(c.checkers, c.order[0])
		c.order = c.order[1:]
	}
	ch := grammar.NewChecker(g, c.vocab)
	c.checkers[key] = ch
	c.order = append(c.order, key)
	return ch
}
