package grammar

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Vocab is a model's vocabulary as the automaton reads it: every token's
// bytes in a trie, walked in preorder, so tokens that share a prefix share
// its steps and a rejected prefix skips all tokens under it. Build it once
// per tokenizer; it is immutable.
type Vocab struct {
	size   int
	pieces [][]byte
	nodes  []vnode
	ids    []int32 // token ids, grouped by the node their bytes end at
	eog    []int32
	depth  int // the longest token, in bytes
}

type vnode struct {
	b        byte
	depth    int32 // bytes from the root: this node's byte is the depth-th
	end      int32 // the index after this node's subtree
	idsStart int32 // ids[idsStart:idsEnd] end here
	idsEnd   int32
}

// NewVocab indexes a vocabulary: pieces[id] is the bytes token id adds to
// the output (empty for tokens that add none, which are never allowed), eog
// the tokens that end a generation. It keeps pieces.
func NewVocab(pieces [][]byte, eog []int32) *Vocab {
	v := &Vocab{size: len(pieces), pieces: pieces, eog: slices.Clone(eog)}
	order := make([]int32, 0, len(pieces))
	for id, p := range pieces {
		if len(p) > 0 && !slices.Contains(eog, int32(id)) {
			order = append(order, int32(id))
		}
	}
	slices.SortFunc(order, func(a, b int32) int {
		if c := bytes.Compare(pieces[a], pieces[b]); c != 0 {
			return c
		}
		return int(a - b)
	})
	// In sorted order every token's new nodes come right after its
	// prefix's: appending them builds the trie in preorder.
	var path []int32 // node index of each depth on the current path
	var prev []byte
	for _, id := range order {
		p := pieces[id]
		lcp := 0
		for lcp < len(p) && lcp < len(prev) && p[lcp] == prev[lcp] {
			lcp++
		}
		for len(path) > lcp {
			v.nodes[path[len(path)-1]].end = int32(len(v.nodes))
			path = path[:len(path)-1]
		}
		for d := lcp; d < len(p); d++ {
			path = append(path, int32(len(v.nodes)))
			v.nodes = append(v.nodes, vnode{b: p[d], depth: int32(d + 1), idsStart: -1})
		}
		last := &v.nodes[path[len(path)-1]]
		if last.idsStart < 0 {
			last.idsStart = int32(len(v.ids))
		}
		v.ids = append(v.ids, id)
		last.idsEnd = int32(len(v.ids))
		v.depth = max(v.depth, len(p))
		prev = p
	}
	for _, i := range path {
		v.nodes[i].end = int32(len(v.nodes))
	}
	return v
}

// Size is the number of tokens, the length of a mask in bits.
func (v *Vocab) Size() int { return v.size }

// Checker is a grammar bound to a vocabulary. It computes the mask of a
// state by walking the vocabulary's trie and keeps it: the states of a JSON
// value recur (inside a string, after a comma, ...), so most steps find
// their mask cached. Safe for concurrent use.
type Checker struct {
	g *Grammar
	v *Vocab

	mu      sync.Mutex
	masks   map[string][]uint64
	scratch []*walk // walkers not in use
}

// maskBudget bounds the bytes of a checker's cached masks; past it the
// cache starts over.
const maskBudget = 16 << 20

type walk struct {
	states []state // one per trie depth
	key    []byte
}

// NewChecker binds g to v.
func NewChecker(g *Grammar, v *Vocab) *Checker {
	return &Checker{g: g, v: v, masks: map[string][]uint64{}}
}

// Grammar returns the checker's grammar.
func (c *Checker) Grammar() *Grammar { return c.g }

// Vocab returns the checker's vocabulary.
func (c *Checker) Vocab() *Vocab { return c.v }

// ErrRejected is returned by Matcher.Accept for a token the grammar does
// not allow.
var ErrRejected = errors.New("token rejected by the grammar")

// Matcher follows one generation: the automaton's state after the tokens
// accepted so far. Not safe for concurrent use.
type Matcher struct {
	c        *Checker
	cur, tmp *state
	done     bool
}

// NewMatcher starts a generation.
func (c *Checker) NewMatcher() *Matcher {
	return &Matcher{c: c, cur: c.g.start(), tmp: &state{}}
}

// Mask returns the tokens allowed next, one bit per token id (bit i of
// word i/64). The mask is shared: do not modify it.
func (m *Matcher) Mask() []uint64 {
	if m.done {
		return make([]uint64, (m.c.v.size+63)/64)
	}
	return m.c.mask(m.cur)
}

// Complete reports whether the output so far is a whole value: an
// end-of-generation token is allowed.
func (m *Matcher) Complete() bool { return m.done || m.c.g.accepting(m.cur) }

// Accept advances by token id; it fails, changing nothing, if the grammar
// does not allow the token there.
func (m *Matcher) Accept(id int32) error {
	if m.done {
		return fmt.Errorf("%w: token %d after the end", ErrRejected, id)
	}
	if slices.Contains(m.c.v.eog, id) {
		if !m.c.g.accepting(m.cur) {
			return fmt.Errorf("%w: end of generation before the value is complete", ErrRejected)
		}
		m.done = true
		return nil
	}
	if id < 0 || int(id) >= m.c.v.size || len(m.c.v.pieces[id]) == 0 {
		return fmt.Errorf("%w: token %d adds no text", ErrRejected, id)
	}
	piece := m.c.v.pieces[id]
	if !m.c.g.acceptBytes(m.tmp, m.cur, piece) {
		return fmt.Errorf("%w: token %d (%q)", ErrRejected, id, piece)
	}
	m.cur, m.tmp = m.tmp, m.cur
	return nil
}

// acceptBytes steps src by every byte of p into dst.
func (g *Grammar) acceptBytes(dst, src *state, p []byte) bool {
	var a, b state
	cur := src
	for i, c := range p {
		next := &a
		if i == len(p)-1 {
			next = dst
		} else if cur == &a {
			next = &b
		}
		g.advance(next, cur, c)
		if next.empty() {
			return false
		}
		cur = next
	}
	return true
}

func (c *Checker) mask(s *state) []uint64 {
	c.mu.Lock()
	w := c.takeWalk()
	w.key = s.key(w.key[:0])
	if m, ok := c.masks[string(w.key)]; ok {
		c.scratch = append(c.scratch, w)
		c.mu.Unlock()
		return m
	}
	c.mu.Unlock()
	m := c.compute(w, s)
	c.mu.Lock()
	if len(c.masks) >= max(64, maskBudget/(8*len(m))) {
		clear(c.masks)
	}
	c.masks[string(w.key)] = m
	c.scratch = append(c.scratch, w)
	c.mu.Unlock()
	return m
}

func (c *Checker) takeWalk() *walk {
	if n := len(c.scratch); n > 0 {
		w := c.scratch[n-1]
		c.scratch = c.scratch[:n-1]
		return w
	}
	return &walk{states: make([]state, c.v.depth+1)}
}

// compute walks the vocabulary's trie from s: a node whose bytes the
// automaton rejects is skipped with its whole subtree.
func (c *Checker) compute(w *walk, s *state) []uint64 {
	v, g := c.v, c.g
	mask := make([]uint64, (v.size+63)/64)
	w.states[0].copyFrom(s)
	for i := 0; i < len(v.nodes); {
		n := &v.nodes[i]
		dst := &w.states[n.depth]
		g.advance(dst, &w.states[n.depth-1], n.b)
		if dst.empty() {
			i = int(n.end)
			continue
		}
		if n.idsStart >= 0 {
			for _, id := range v.ids[n.idsStart:n.idsEnd] {
				mask[id>>6] |= 1 << (id & 63)
			}
		}
		i++
	}
	if g.accepting(s) {
		for _, id := range v.eog {
			if int(id) < v.size && id >= 0 {
				mask[id>>6] |= 1 << (id & 63)
			}
		}
	}
	return mask
}
