package infer

import (
	"fmt"
	"slices"
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
