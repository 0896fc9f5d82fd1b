// Package grammar constrains generation to JSON: any JSON object, or the
// values a JSON Schema accepts. A schema compiles into a Grammar, a
// byte-level pushdown automaton; a Checker binds it to a model's vocabulary
// and tells, for a state of the automaton, which tokens may come next (a
// mask, cached per state); a Matcher follows one generation through it.
//
// Whitespace between JSON tokens is at most one space (no newlines) and
// numbers have bounded digits, so the model always makes progress towards
// the end of the value; once the value is complete only an end-of-generation
// token may follow.
package grammar

import (
	"errors"
	"fmt"
)

// Errors a compilation fails with; the message names the keyword and where
// it sits in the schema.
var (
	// ErrUnsupported: the schema uses something rbee cannot guarantee, so it
	// refuses the schema instead of honouring part of it.
	ErrUnsupported = errors.New("unsupported schema")
	// ErrInvalid: the schema is not a well-formed JSON Schema.
	ErrInvalid = errors.New("invalid schema")
)

// Limits that bound the automaton.
const (
	// MaxDepth bounds the nesting of values (the automaton's stack).
	MaxDepth = 32
	// MaxIntDigits and MaxFracDigits bound a number's integer and fraction
	// digits; MaxExpDigits its exponent's.
	MaxIntDigits  = 15
	MaxFracDigits = 15
	MaxExpDigits  = 2 // with 15 digits, within float64's range
	// maxNodes bounds a compiled schema.
	maxNodes = 1 << 14
)

type kind uint8

const (
	kRoot    kind = iota // the document: optional leading whitespace, one value
	kObject              // an object with known properties, in schema order
	kMap                 // an object with free keys, values of elem
	kArray               // an array of elem
	kString              // a string, maybe with length bounds or a format
	kNumber              // any JSON number
	kInteger             // a number without fraction or exponent
	kLiteral             // one of fixed byte strings (enum, const, true, ...)
	kChoice              // one of alts (anyOf, a list of types)
)

// node is one compiled schema.
type node struct {
	kind kind
	elem int32 // kRoot, kMap, kArray: the value's node
	// kObject: properties in order, and for each index the first required
	// property at or after it (-1: none); keys is the root of their trie.
	props   []prop
	nextReq []int32
	keys    int32
	// kArray: item bounds (maxItems -1: none).
	minItems, maxItems int32
	// kString: length bounds in characters (maxLen -1: none), or a format.
	minLen, maxLen int32
	format         *dfa
	// kLiteral: the root of the alternatives' trie.
	lit int32
	// kChoice: the alternatives, none of them a choice.
	alts []int32
	// first holds the bytes a value of this node can start with.
	first [4]uint64
}

type prop struct {
	value    int32
	required bool
}

// trieNode is a node of a literal or key trie. For key tries, props marks
// the properties whose key runs through the node and prop is the property
// whose key ends here (-1: none).
type trieNode struct {
	term  bool
	prop  int32
	edges []trieEdge
	props []uint64
}

type trieEdge struct {
	b  byte
	to int32
}

// Grammar is a compiled constraint. It is immutable and safe for concurrent
// use.
type Grammar struct {
	nodes []node
	trie  []trieNode
	root  int32
	key   string
}

// Key identifies the grammar: two grammars with the same key accept the same
// bytes, so their masks may be shared.
func (g *Grammar) Key() string { return g.key }

func (g *Grammar) add(n node) (int32, error) {
	if len(g.nodes) >= maxNodes {
		return 0, fmt.Errorf("%w: the schema compiles to more than %d nodes", ErrUnsupported, maxNodes)
	}
	g.nodes = append(g.nodes, n)
	return int32(len(g.nodes) - 1), nil
}

func (g *Grammar) newTrieNode() int32 {
	g.trie = append(g.trie, trieNode{prop: -1})
	return int32(len(g.trie) - 1)
}

// insert adds s to the trie at root and returns the node where it ends.
func (g *Grammar) insert(root int32, s []byte) int32 {
	at := root
	for _, b := range s {
		next := g.edge(at, b)
		if next < 0 {
			next = g.newTrieNode()
			g.trie[at].edges = append(g.trie[at].edges, trieEdge{b, next})
		}
		at = next
	}
	g.trie[at].term = true
	return at
}

func (g *Grammar) edge(at int32, b byte) int32 {
	for _, e := range g.trie[at].edges {
		if e.b == b {
			return e.to
		}
	}
	return -1
}

func setBit(s *[4]uint64, b byte)      { s[b>>6] |= 1 << (b & 63) }
func hasBit(s *[4]uint64, b byte) bool { return s[b>>6]&(1<<(b&63)) != 0 }

// computeFirst fills every node's first-byte set; a choice's alternatives
// are never choices, so one pass over the alternatives after the others
// suffices.
func (g *Grammar) computeFirst() {
	for i := range g.nodes {
		n := &g.nodes[i]
		n.first = [4]uint64{}
		switch n.kind {
		case kObject, kMap:
			setBit(&n.first, '{')
		case kArray:
			setBit(&n.first, '[')
		case kString:
			setBit(&n.first, '"')
		case kNumber, kInteger:
			setBit(&n.first, '-')
			for c := byte('0'); c <= '9'; c++ {
				setBit(&n.first, c)
			}
		case kLiteral:
			for _, e := range g.trie[n.lit].edges {
				setBit(&n.first, e.b)
			}
		}
	}
	for i := range g.nodes {
		n := &g.nodes[i]
		if n.kind == kChoice {
			for _, a := range n.alts {
				for w := range n.first {
					n.first[w] |= g.nodes[a].first[w]
				}
			}
		}
	}
}
