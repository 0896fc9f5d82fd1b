package infer

import (
	"fmt"
	"slices"
	"testing"
)

// check verifies the pool's invariants; tests call it after every change.
func (c *kvCache) check() error {
	inUse, cached := 0, 0
	for b := range c.blocks {
		bi := &c.blocks[b]
		switch {
		case bi.refs < 0:
			return fmt.Errorf("block %d: %d references", b, bi.refs)
		case bi.refs > 0:
			inUse++
		case bi.content != 0:
			cached++
		}
	}
	for o := c.lruHead; o >= 0; o = c.blocks[o].next {
		if c.blocks[o].refs != 0 || c.blocks[o].content == 0 {
			return fmt.Errorf("block %d in the cached list with %d references, content %d", o, c.blocks[o].refs, c.blocks[o].content)
		}
	}
	for _, b := range c.free {
		if c.blocks[b].refs != 0 || c.blocks[b].content != 0 {
			return fmt.Errorf("free block %d has %d references, content %d", b, c.blocks[b].refs, c.blocks[b].content)
		}
	}
	if inUse != c.inUse || cached != c.lruLen || inUse+cached+len(c.free) != len(c.blocks) ||
		slices.ContainsFunc(c.free, func(b int32) bool { return c.blocks[b].prev >= 0 }) {
		return fmt.Errorf("%d in use (counted %d), %d cached (listed %d), %d free of %d",
			inUse, c.inUse, cached, c.lruLen, len(c.free), len(c.blocks))
	}
	return nil
}

func seqTokens(n int, base int32) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = base + int32(i)
	}
	return out
}

// fill runs a sequence's bookkeeping as the engine does: reuse, copy,
// reserve, advance, and returns how many positions came from the cache.
func fill(t *testing.T, c *kvCache, s *kvSeq, tokens []int32) int {
	t.Helper()
	src, dst := c.reusePrefix(s, tokens)
	if dst >= 0 {
		c.release(src)
	}
	cached := s.len
	if !c.reserve(s, len(tokens)) {
		t.Fatalf("no room for %d tokens: %v", len(tokens), c.check())
	}
	c.advance(s, tokens, len(tokens))
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	return cached
}

func TestKVCachePrefixReuse(t *testing.T) {
	c := newKVCache(16)
	a := seqTokens(40, 100) // two full blocks and 8 positions
	var s kvSeq
	if got := fill(t, c, &s, a); got != 0 {
		t.Fatalf("first sequence found %d cached positions", got)
	}
	c.releaseSeq(&s, a)

	cases := []struct {
		name   string
		tokens []int32
		cached int
	}{
		{"the same tokens: all but the last", a, 39},
		{"a longer sequence: all of the first", append(slices.Clone(a), 7, 8, 9), 40},
		{"a prefix ending inside a full block", a[:20], 19},
		{"a prefix ending inside the partial block", a[:36], 35},
		{"diverging in the second block", append(slices.Clone(a[:21]), 5, 5, 5), 21},
		{"diverging at the first token", seqTokens(30, 7), 0},
		{"one token", a[:1], 0},
	}
	for _, tc := range cases {
		var s kvSeq
		if got := fill(t, c, &s, tc.tokens); got != tc.cached {
			t.Errorf("%s: %d positions from the cache, want %d", tc.name, got, tc.cached)
		}
		c.releaseSeq(&s, tc.tokens)
		if err := c.check(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
}

// Two running sequences share full blocks; a partly shared block is copied,
// never written by both.
func TestKVCacheSharesFullBlocksOnly(t *testing.T) {
	c := newKVCache(16)
	a := seqTokens(40, 100)
	var s1, s2 kvSeq
	fill(t, c, &s1, a)
	b := append(slices.Clone(a[:20]), 1, 2, 3)
	if got := fill(t, c, &s2, b); got != 20 {
		t.Fatalf("second sequence found %d cached positions, want 20", got)
	}
	if s1.blocks[0] != s2.blocks[0] {
		t.Errorf("the first full block is not shared: %v and %v", s1.blocks, s2.blocks)
	}
	if s1.blocks[1] == s2.blocks[1] {
		t.Errorf("the partly shared second block is written by both: %v and %v", s1.blocks, s2.blocks)
	}
	if c.blocks[s1.blocks[0]].refs != 2 {
		t.Errorf("shared block has %d references, want 2", c.blocks[s1.blocks[0]].refs)
	}
	c.releaseSeq(&s1, a)
	c.releaseSeq(&s2, b)
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	if c.inUse != 0 || c.available() != c.capacity() {
		t.Errorf("after release: %d in use, %d available of %d", c.inUse, c.available(), c.capacity())
	}
}

// Cached blocks are given up, oldest first, when new contents need room;
// a block in use never is.
func TestKVCacheEvictsOldestFirst(t *testing.T) {
	c := newKVCache(5)
	old, recent := seqTokens(32, 100), seqTokens(32, 500)
	for _, tokens := range [][]int32{old, recent} {
		var s kvSeq
		fill(t, c, &s, tokens)
		c.releaseSeq(&s, tokens)
	}
	var s kvSeq
	fill(t, c, &s, seqTokens(32, 900)) // the free block, then the oldest cached one
	var again kvSeq
	if got := fill(t, c, &again, recent); got != 31 {
		t.Errorf("the recent sequence found %d cached positions after eviction, want 31", got)
	}
	var more kvSeq
	if c.reserve(&more, 32) {
		t.Error("reserve took two blocks where one is left")
	}
	if !c.reserve(&more, 16) || c.inUse != 5 {
		t.Errorf("reserve could not take the last block (%d in use)", c.inUse)
	}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
}
