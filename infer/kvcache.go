package infer

import "errors"

// ErrKVExhausted is returned when the KV pool cannot hold a sequence even
// with every other sequence's memory given back.
var ErrKVExhausted = errors.New("KV cache pool exhausted")

// kvBlockTokens is the number of positions in one KV block: the unit in which
// sequences take memory and share prefixes.
const kvBlockTokens = 16

// prefixKey groups the cached blocks that follow the same block and start
// with the same token. A prefix is found by walking blocks from the start,
// so two sequences share a block only if everything before it is the same
// too, and within a group the block whose tokens match longest wins.
type prefixKey struct {
	parent uint64 // content id of the previous block; 0 at the start
	first  int32
}

type blockInfo struct {
	refs int32 // sequences using the block
	// content identifies what the block holds while it is registered in the
	// cache (0 when not): its tokens and everything before them. Blocks
	// after it name it as their parent.
	content uint64
	parent  uint64
	n       int32 // positions filled; a partial block is cached only when its sequence ends
	tokens  [kvBlockTokens]int32
	sibling int32 // next block of the same prefixKey group; -1 at the end
	// The block's place in the list of cached blocks no sequence uses, the
	// least recently released first; -1 when not in it.
	prev, next int32
}

// kvCache hands out KV blocks from a fixed pool and remembers what the
// blocks nobody uses anymore hold, so a later sequence with the same prefix
// takes them instead of computing them again (vLLM's automatic prefix
// caching, at the granularity of single tokens). Only bookkeeping lives
// here; the keys and values themselves are stored by the backend, indexed
// by block. A kvCache is not safe for concurrent use: one engine drives it.
type kvCache struct {
	blocks   []blockInfo
	free     []int32 // blocks holding nothing worth keeping
	lruHead  int32   // oldest cached block nobody uses; -1 when none
	lruTail  int32
	lruLen   int
	groups   map[prefixKey]int32 // first block of each group
	nextID   uint64
	inUse    int // blocks with refs > 0
	maxInUse int
}

func newKVCache(blocks int) *kvCache {
	c := &kvCache{
		blocks:  make([]blockInfo, blocks),
		free:    make([]int32, blocks),
		lruHead: -1, lruTail: -1,
		// Sized for every block, so registering never grows the map.
		groups: make(map[prefixKey]int32, blocks),
	}
	for i := range c.blocks {
		c.blocks[i].prev, c.blocks[i].next, c.blocks[i].sibling = -1, -1, -1
		c.free[i] = int32(blocks - 1 - i) // hand out low blocks first
	}
	return c
}

// available is the number of blocks a sequence could take now.
func (c *kvCache) available() int { return len(c.free) + c.lruLen }

// capacity is the pool's size in blocks.
func (c *kvCache) capacity() int { return len(c.blocks) }

func (c *kvCache) lruRemove(b int32) {
	bi := &c.blocks[b]
	if bi.prev >= 0 {
		c.blocks[bi.prev].next = bi.next
	} else {
		c.lruHead = bi.next
	}
	if bi.next >= 0 {
		c.blocks[bi.next].prev = bi.prev
	} else {
		c.lruTail = bi.prev
	}
	bi.prev, bi.next = -1, -1
	c.lruLen--
}

func (c *kvCache) lruPush(b int32) {
	bi := &c.blocks[b]
	bi.prev, bi.next = c.lruTail, -1
	if c.lruTail >= 0 {
		c.blocks[c.lruTail].next = b
	} else {
		c.lruHead = b
	}
	c.lruTail = b
	c.lruLen++
}

// alloc takes a block for new contents: a free one, or else the cached
// block released longest ago, whose contents are forgotten.
func (c *kvCache) alloc() (int32, bool) {
	var b int32
	switch {
	case len(c.free) > 0:
		b = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
	case c.lruHead >= 0:
		b = c.lruHead
		c.lruRemove(b)
		c.unregister(b)
	default:
		return -1, false
	}
	c.blocks[b].refs = 1
	c.use(1)
	return b, true
}

func (c *kvCache) use(n int) {
	c.inUse += n
	c.maxInUse = max(c.maxInUse, c.inUse)
}

// acquire adds a reference to a block found in the cache.
func (c *kvCache) acquire(b int32) {
	bi := &c.blocks[b]
	if bi.refs == 0 {
		c.lruRemove(b)
		c.use(1)
	}
	bi.refs++
}

// release drops a reference. A block nobody uses stays cached if it is
// registered, and is free otherwise.
func (c *kvCache) release(b int32) {
	bi := &c.blocks[b]
	bi.refs--
	if bi.refs > 0 {
		return
	}
	c.use(-1)
	if bi.content != 0 {
		c.lruPush(b)
	} else {
		c.free = append(c.free, b)
	}
}

// match returns how many of tokens block b holds at its start.
func (c *kvCache) match(b int32, tokens []int32) int {
	bi := &c.blocks[b]
	n := min(int(bi.n), len(tokens))
	for i := range n {
		if bi.tokens[i] != tokens[i] {
			return i
		}
	}
	return n
}

// register records that block b, following the block whose content id is
// parent, holds tokens, so that later sequences can find it; it returns the
// content id the block after it keys on. When a cached block already holds
// all of tokens after the same parent, b stays unregistered (it is still
// correct for its own sequence) and that block's id is returned.
func (c *kvCache) register(b int32, parent uint64, tokens []int32) uint64 {
	key := prefixKey{parent: parent, first: tokens[0]}
	head, ok := c.groups[key]
	for o := head; ok && o >= 0; o = c.blocks[o].sibling {
		if c.match(o, tokens) == len(tokens) {
			return c.blocks[o].content
		}
	}
	c.nextID++
	bi := &c.blocks[b]
	bi.content, bi.parent, bi.n = c.nextID, parent, int32(len(tokens))
	copy(bi.tokens[:], tokens)
	bi.sibling = -1
	if ok {
		bi.sibling = head
	}
	c.groups[key] = b
	return bi.content
}

func (c *kvCache) unregister(b int32) {
	bi := &c.blocks[b]
	if bi.content == 0 {
		return
	}
	key := prefixKey{parent: bi.parent, first: bi.tokens[0]}
	if head := c.groups[key]; head == b {
		if bi.sibling >= 0 {
			c.groups[key] = bi.sibling
		} else {
			delete(c.groups, key)
		}
	} else {
		for o := head; o >= 0; o = c.blocks[o].sibling {
			if c.blocks[o].sibling == b {
				c.blocks[o].sibling = bi.sibling
				break
			}
		}
	}
	bi.content, bi.sibling = 0, -1
}

// longest returns the cached block after parent whose tokens begin tokens
// for the most positions, and that count; -1 when none shares the first.
func (c *kvCache) longest(parent uint64, tokens []int32) (block int32, n int) {
	block = -1
	head, ok := c.groups[prefixKey{parent: parent, first: tokens[0]}]
	for o := head; ok && o >= 0; o = c.blocks[o].sibling {
		if m := c.match(o, tokens); m > n {
			block, n = o, m
		}
	}
	return block, n
}

// kvSeq is one sequence's view of the pool: its block table and how many
// positions hold keys and values.
type kvSeq struct {
	blocks []int32
	len    int
	// contents[i] is the content id of block i once it is full and
	// registered (0 before); the next block's key starts from it.
	contents []uint64
}

// blockTokens returns block i's share of tokens, at most a block's worth.
func blockTokens(tokens []int32, i int) []int32 {
	start := i * kvBlockTokens
	return tokens[start:min(start+kvBlockTokens, len(tokens))]
}

// reusePrefix points an empty sequence at the cached blocks that already
// hold the longest prefix of tokens, leaving at least the last token to be
// evaluated (its logits are needed). Cached blocks are shared read-only, so
// when the sequence will write into the last block it found (one it shares
// only in part), that block is given to it as a fresh copy: reusePrefix
// returns the cached block src, which the caller copies into dst and then
// releases. dst is -1 when nothing is to be copied; when no block is left
// for the copy, the prefix ends before it.
func (c *kvCache) reusePrefix(s *kvSeq, tokens []int32) (src, dst int32) {
	limit := len(tokens) - 1 // positions that may come from the cache
	var parent uint64
	for i := 0; i*kvBlockTokens < limit; i++ {
		start := i * kvBlockTokens
		b, n := c.longest(parent, blockTokens(tokens[:limit], i))
		if b < 0 {
			break
		}
		c.acquire(b)
		if n == kvBlockTokens {
			s.blocks = append(s.blocks, b)
			s.contents = append(s.contents, c.blocks[b].content)
			s.len = start + n
			parent = c.blocks[b].content
			continue
		}
		copyTo, ok := c.alloc()
		if !ok {
			c.release(b)
			break
		}
		s.blocks = append(s.blocks, copyTo)
		s.contents = append(s.contents, 0)
		s.len = start + n
		return b, copyTo
	}
	return -1, -1
}

// reserve makes room for the positions up to end, taking new blocks. It
// fails, taking nothing, when the pool cannot supply them.
func (c *kvCache) reserve(s *kvSeq, end int) bool {
	need := blocksFor(end) - len(s.blocks)
	if need <= 0 {
		return true
	}
	if need > c.available() {
		return false
	}
	for range need {
		b, _ := c.alloc()
		s.blocks = append(s.blocks, b)
		s.contents = append(s.contents, 0)
	}
	return true
}

// advance records that positions up to end now hold keys and values of
// tokens[:end], registering every block that became full.
func (c *kvCache) advance(s *kvSeq, tokens []int32, end int) {
	for i := s.len / kvBlockTokens; i < end/kvBlockTokens; i++ {
		if s.contents[i] == 0 {
			s.contents[i] = c.register(s.blocks[i], c.parentOf(s, i), blockTokens(tokens, i))
		}
	}
	s.len = end
}

// parentOf is the content id block i of s keys on.
func (c *kvCache) parentOf(s *kvSeq, i int) uint64 {
	if i == 0 {
		return 0
	}
	return s.contents[i-1]
}

// releaseSeq gives back a sequence's blocks. A last, partly filled block is
// registered first, so a later request that repeats the whole sequence
// finds all of it.
func (c *kvCache) releaseSeq(s *kvSeq, tokens []int32) {
	if n := s.len % kvBlockTokens; n > 0 {
		i := s.len / kvBlockTokens
		c.register(s.blocks[i], c.parentOf(s, i), tokens[i*kvBlockTokens:s.len])
	}
	for _, b := range s.blocks {
		c.release(b)
	}
	s.blocks, s.contents, s.len = s.blocks[:0], s.contents[:0], 0
}
