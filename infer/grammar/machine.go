package grammar

import "slices"

// frame is one level of the automaton's stack: a value being read.
type frame struct {
	node  int32
	k     int32 // trie node (literal, key), format state, or number state
	n     int32 // property index, item or character count, digit count
	phase uint8
	ws    uint8 // 1 once the current gap has its space (see space)
	esc   uint8 // string: escape or UTF-8 state
	_     uint8
}

// Container phases (objects, maps, arrays).
const (
	pOpen     = 0 // before '{' or '['
	pFirst    = 1 // after it: a key, an item or the close
	pKey      = 2 // in a key
	pColon    = 3 // after a key
	pValue    = 4 // after ':'
	pAfter    = 5 // after a value: ',' or the close
	pNext     = 6 // after ','
	pInValue  = 7 // the value is on the stack above
	pRootDone = 1 // the root's value is complete
)

// String escape and UTF-8 states (frame.esc).
const (
	escNone   = 0
	escSlash  = 1  // after '\'
	escHex    = 2  // \u: 2, 3, 4, 5 are 4, 3, 2, 1 hex digits to go
	escHexD   = 6  // \uD: the next digit must be 0-7 (no surrogates)
	utfCont1  = 20 // one continuation byte to go
	utfCont2  = 21 // two
	utfE0     = 22 // two, the first A0-BF
	utfED     = 23 // two, the first 80-9F
	utfCont3  = 24 // three
	utfF0     = 25 // three, the first 90-BF
	utfF4     = 26 // three, the first 80-8F
	escFormat = 30 // a format string's content, its DFA state in k
)

// Number states (frame.k).
const (
	numStart = iota
	numMinus
	numInt  // integer digits, n of them
	numZero // a leading 0
	numDot
	numFrac // fraction digits
	numE
	numESign
	numExp // exponent digits
)

// State is where the automaton is: one or more threads (stacks), more than
// one only while anyOf alternatives are still all possible.
type state struct {
	frames []frame
	ends   []int32
	forks  [][]frame // scratch: alternatives to step once the current thread is done
}

func (s *state) reset() {
	s.frames, s.ends = s.frames[:0], s.ends[:0]
}

func (s *state) empty() bool { return len(s.ends) == 0 }

func (s *state) thread(i int) []frame {
	start := int32(0)
	if i > 0 {
		start = s.ends[i-1]
	}
	return s.frames[start:s.ends[i]]
}

func (s *state) copyFrom(o *state) {
	s.frames = append(s.frames[:0], o.frames...)
	s.ends = append(s.ends[:0], o.ends...)
}

// key encodes the state for the mask cache.
func (s *state) key(buf []byte) []byte {
	for i := range s.ends {
		if i > 0 {
			buf = append(buf, 0xff)
		}
		for _, f := range s.thread(i) {
			buf = append(buf, byte(f.node), byte(f.node>>8), byte(f.node>>16), byte(f.node>>24),
				byte(f.k), byte(f.k>>8), byte(f.k>>16), byte(f.k>>24),
				byte(f.n), byte(f.n>>8), byte(f.n>>16), byte(f.n>>24), f.phase, f.ws, f.esc)
		}
	}
	return buf
}

// start returns the initial state.
func (g *Grammar) start() *state {
	s := &state{}
	s.frames = append(s.frames, frame{node: g.root})
	s.ends = append(s.ends, 1)
	return s
}

// advance steps every thread of src by c into dst; dst is empty when c is
// rejected.
func (g *Grammar) advance(dst, src *state, c byte) {
	dst.reset()
	for i := range src.ends {
		start := len(dst.frames)
		dst.frames = append(dst.frames, src.thread(i)...)
		g.run(dst, start, c)
		for len(dst.forks) > 0 {
			last := len(dst.forks) - 1
			fork := dst.forks[last]
			dst.forks = dst.forks[:last]
			start := len(dst.frames)
			dst.frames = append(dst.frames, fork...)
			g.run(dst, start, c)
		}
	}
	if len(dst.ends) > 1 {
		dst.dedupe()
	}
}

// maxThreads bounds the alternatives followed at once; past it the rest are
// dropped, which can only refuse output, never accept invalid output.
const maxThreads = 64

// dedupe drops threads equal to an earlier one.
func (s *state) dedupe() {
	var frames []frame
	var ends []int32
	for i := range s.ends {
		t := s.thread(i)
		dup := false
		for j := range ends {
			start := int32(0)
			if j > 0 {
				start = ends[j-1]
			}
			if slices.Equal(frames[start:ends[j]], t) {
				dup = true
				break
			}
		}
		if !dup && len(ends) < maxThreads {
			frames = append(frames, t...)
			ends = append(ends, int32(len(frames)))
		}
	}
	s.frames = append(s.frames[:0], frames...)
	s.ends = append(s.ends[:0], ends...)
}

// Outcomes of a frame's step.
const (
	rReject   = iota
	rConsumed // c read, the value goes on
	rDone     // c read and the value is complete
	rPop      // the value was complete before c, which its parent reads
	rPush     // c starts a child value
)

// run steps the thread dst.frames[start:] by c, appending its end to dst
// on success and dropping it otherwise.
func (g *Grammar) run(dst *state, start int, c byte) {
	for {
		top := len(dst.frames) - 1
		r, child := g.stepFrame(&dst.frames[top], c)
		switch r {
		case rConsumed:
			dst.ends = append(dst.ends, int32(len(dst.frames)))
			return
		case rDone, rPop:
			if top == start {
				dst.frames = dst.frames[:start]
				return
			}
			dst.frames = dst.frames[:top]
			g.childDone(&dst.frames[top-1])
			if r == rDone {
				dst.ends = append(dst.ends, int32(len(dst.frames)))
				return
			}
		case rPush:
			if top-start+1 >= MaxDepth {
				dst.frames = dst.frames[:start]
				return
			}
			n := &g.nodes[child]
			if n.kind == kChoice {
				first := int32(-1)
				for _, a := range n.alts {
					if !hasBit(&g.nodes[a].first, c) {
						continue
					}
					if first < 0 {
						first = a
						continue
					}
					fork := slices.Clone(dst.frames[start:])
					dst.forks = append(dst.forks, append(fork, frame{node: a}))
				}
				if first < 0 {
					dst.frames = dst.frames[:start]
					return
				}
				child = first
			}
			dst.frames = append(dst.frames, frame{node: child})
		default:
			dst.frames = dst.frames[:start]
			return
		}
	}
}

// childDone tells a container that the value above it is complete.
func (g *Grammar) childDone(f *frame) {
	n := &g.nodes[f.node]
	switch n.kind {
	case kRoot:
		f.phase = pRootDone
	case kObject:
		f.phase, f.n = pAfter, f.n+1
	case kMap:
		if f.phase == pKey {
			f.phase = pColon
		} else {
			f.phase = pAfter
		}
	case kArray:
		f.phase = pAfter
		if limit := max(n.minItems, n.maxItems); limit > 0 && f.n < limit {
			f.n++
		}
	}
}

// accepting reports whether the value is complete: only the end may come.
func (g *Grammar) accepting(s *state) bool {
	for i := range s.ends {
		t := s.thread(i)
		switch {
		case len(t) == 1 && t[0].phase == pRootDone:
			return true
		case len(t) == 2 && g.canEnd(&t[1]):
			return true
		}
	}
	return false
}

// canEnd reports whether a value that ends without a closing byte (a number,
// a literal that is a prefix of another) may end here.
func (g *Grammar) canEnd(f *frame) bool {
	switch g.nodes[f.node].kind {
	case kNumber, kInteger:
		return f.k == numInt || f.k == numZero || f.k == numFrac || f.k == numExp
	case kLiteral:
		return g.trie[f.k].term
	}
	return false
}

func isWS(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// space reads a whitespace byte between JSON tokens. A gap holds at most
// one space and never a newline, as OpenAI's structured outputs are
// compact: a small model given room to indent spends its token budget on
// runs of spaces.
func space(f *frame, c byte) int {
	if f.ws != 0 || c != ' ' {
		return rReject
	}
	f.ws = 1
	return rConsumed
}

func (g *Grammar) starts(n int32, c byte) bool { return hasBit(&g.nodes[n].first, c) }

// stepFrame reads c in the frame on top of the stack.
func (g *Grammar) stepFrame(f *frame, c byte) (int, int32) {
	n := &g.nodes[f.node]
	switch n.kind {
	case kRoot:
		if f.phase != 0 {
			return rReject, 0
		}
		if isWS(c) {
			return space(f, c), 0
		}
		if g.starts(n.elem, c) {
			f.phase, f.ws = pInValue, 0
			return rPush, n.elem
		}
	case kObject:
		return g.stepObject(f, n, c)
	case kMap:
		return g.stepMap(f, n, c)
	case kArray:
		return g.stepArray(f, n, c)
	case kString:
		return g.stepString(f, n, c), 0
	case kNumber, kInteger:
		return stepNumber(f, n.kind == kInteger, c), 0
	case kLiteral:
		if f.phase == 0 {
			f.phase, f.k = 1, n.lit
		}
		if next := g.edge(f.k, c); next >= 0 {
			f.k = next
			if t := &g.trie[next]; t.term && len(t.edges) == 0 {
				return rDone, 0
			}
			return rConsumed, 0
		}
		if g.trie[f.k].term {
			return rPop, 0
		}
	}
	return rReject, 0
}

func (g *Grammar) stepObject(f *frame, n *node, c byte) (int, int32) {
	if f.phase == pOpen {
		if c == '{' {
			f.phase = pFirst
			return rConsumed, 0
		}
		return rReject, 0
	}
	if f.phase != pKey && isWS(c) {
		return space(f, c), 0
	}
	f.ws = 0
	switch f.phase {
	case pFirst, pNext:
		if c == '"' && f.n < int32(len(n.props)) {
			if next := g.edge(n.keys, c); next >= 0 && g.keyOpen(next, n, f.n) {
				f.phase, f.k = pKey, next
				return rConsumed, 0
			}
		}
		if c == '}' && f.phase == pFirst && n.nextReq[f.n] < 0 {
			return rDone, 0
		}
	case pKey:
		next := g.edge(f.k, c)
		if next < 0 || !g.keyOpen(next, n, f.n) {
			return rReject, 0
		}
		f.k = next
		if t := &g.trie[next]; t.prop >= 0 {
			f.phase, f.n, f.k = pColon, t.prop, 0
		}
		return rConsumed, 0
	case pColon:
		if c == ':' {
			f.phase = pValue
			return rConsumed, 0
		}
	case pValue:
		if v := n.props[f.n].value; g.starts(v, c) {
			f.phase = pInValue
			return rPush, v
		}
	case pAfter:
		if c == ',' && f.n < int32(len(n.props)) {
			f.phase = pNext
			return rConsumed, 0
		}
		if c == '}' && n.nextReq[f.n] < 0 {
			return rDone, 0
		}
	}
	return rReject, 0
}

// keyOpen reports whether a key through trie node t may come after the
// properties before index from: the properties from it up to the next
// required one may appear, in order.
func (g *Grammar) keyOpen(t int32, n *node, from int32) bool {
	to := n.nextReq[from]
	if to < 0 {
		to = int32(len(n.props)) - 1
	}
	bits := g.trie[t].props
	for i := from; i <= to; i++ {
		if bits[i>>6]&(1<<(i&63)) != 0 {
			return true
		}
	}
	return false
}

// keyString is the node of free object keys: the node after the root.
const keyString = 1

func (g *Grammar) stepMap(f *frame, n *node, c byte) (int, int32) {
	if f.phase == pOpen {
		if c == '{' {
			f.phase = pFirst
			return rConsumed, 0
		}
		return rReject, 0
	}
	if isWS(c) {
		return space(f, c), 0
	}
	f.ws = 0
	switch f.phase {
	case pFirst, pNext:
		if c == '"' {
			f.phase = pKey
			return rPush, keyString
		}
		if c == '}' && f.phase == pFirst {
			return rDone, 0
		}
	case pColon:
		if c == ':' {
			f.phase = pValue
			return rConsumed, 0
		}
	case pValue:
		if g.starts(n.elem, c) {
			f.phase = pInValue
			return rPush, n.elem
		}
	case pAfter:
		switch c {
		case ',':
			f.phase = pNext
			return rConsumed, 0
		case '}':
			return rDone, 0
		}
	}
	return rReject, 0
}

func (g *Grammar) stepArray(f *frame, n *node, c byte) (int, int32) {
	if f.phase == pOpen {
		if c == '[' {
			f.phase = pFirst
			return rConsumed, 0
		}
		return rReject, 0
	}
	if isWS(c) {
		return space(f, c), 0
	}
	f.ws = 0
	switch f.phase {
	case pFirst, pNext:
		if c == ']' && f.phase == pFirst && n.minItems == 0 {
			return rDone, 0
		}
		if n.maxItems != 0 && g.starts(n.elem, c) {
			f.phase = pInValue
			return rPush, n.elem
		}
	case pAfter:
		if c == ',' && (n.maxItems < 0 || f.n < n.maxItems) {
			f.phase = pNext
			return rConsumed, 0
		}
		if c == ']' && f.n >= n.minItems {
			return rDone, 0
		}
	}
	return rReject, 0
}

func (g *Grammar) stepString(f *frame, n *node, c byte) int {
	if f.phase == 0 {
		if c != '"' {
			return rReject
		}
		f.phase = 1
		if n.format != nil {
			f.esc, f.k = escFormat, 0
		}
		return rConsumed
	}
	switch e := f.esc; {
	case e == escFormat:
		if c == '"' {
			if n.format.accept[f.k] {
				return rDone
			}
			return rReject
		}
		if c >= 0x80 {
			return rReject
		}
		next := n.format.next[f.k][c]
		if next < 0 {
			return rReject
		}
		f.k = int32(next)
		return rConsumed
	case e == escNone:
		switch {
		case c == '"':
			if f.n >= n.minLen {
				return rDone
			}
			return rReject
		case n.maxLen >= 0 && f.n >= n.maxLen, c < 0x20:
			return rReject
		case c == '\\':
			f.esc = escSlash
		case c < 0x80:
			countChar(f, n)
		case c >= 0xC2 && c <= 0xDF:
			f.esc = utfCont1
		case c == 0xE0:
			f.esc = utfE0
		case c == 0xED:
			f.esc = utfED
		case c >= 0xE1 && c <= 0xEF:
			f.esc = utfCont2
		case c == 0xF0:
			f.esc = utfF0
		case c == 0xF4:
			f.esc = utfF4
		case c >= 0xF1 && c <= 0xF3:
			f.esc = utfCont3
		default:
			return rReject
		}
	case e == escSlash:
		switch c {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			f.esc = escNone
			countChar(f, n)
		case 'u':
			f.esc = escHex
		default:
			return rReject
		}
	case e >= escHex && e <= escHex+3 || e == escHexD:
		if !isHex(c) || e == escHexD && !(c >= '0' && c <= '7') {
			return rReject
		}
		switch {
		case e == escHex && (c == 'd' || c == 'D'):
			f.esc = escHexD
		case e == escHexD:
			f.esc = escHex + 2
		case e == escHex+3:
			f.esc = escNone
			countChar(f, n)
		default:
			f.esc++
		}
	default:
		lo, hi := byte(0x80), byte(0xBF)
		switch e {
		case utfE0:
			lo = 0xA0
		case utfED:
			hi = 0x9F
		case utfF0:
			lo = 0x90
		case utfF4:
			hi = 0x8F
		}
		if c < lo || c > hi {
			return rReject
		}
		switch e {
		case utfCont1:
			f.esc = escNone
			countChar(f, n)
		case utfCont2, utfE0, utfED:
			f.esc = utfCont1
		default:
			f.esc = utfCont2
		}
	}
	return rConsumed
}

// countChar counts a character of a string with length bounds; without
// them the count stays 0, so the states of long strings recur.
func countChar(f *frame, n *node) {
	if limit := max(n.minLen, n.maxLen); limit > 0 && f.n < limit {
		f.n++
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func stepNumber(f *frame, integer bool, c byte) int {
	switch f.k {
	case numStart, numMinus:
		switch {
		case c == '-' && f.k == numStart:
			f.k = numMinus
		case c == '0':
			f.k = numZero
		case c >= '1' && c <= '9':
			f.k, f.n = numInt, 1
		default:
			return rReject
		}
		return rConsumed
	case numInt, numZero:
		switch {
		case isDigit(c) && f.k == numInt:
			if f.n >= MaxIntDigits {
				return rReject
			}
			f.n++
			return rConsumed
		case c == '.' && !integer:
			f.k, f.n = numDot, 0
			return rConsumed
		case (c == 'e' || c == 'E') && !integer:
			f.k, f.n = numE, 0
			return rConsumed
		case isDigit(c):
			return rReject // no leading zeros
		}
		return rPop
	case numDot, numFrac:
		switch {
		case isDigit(c):
			if f.n >= MaxFracDigits {
				return rReject
			}
			f.k = numFrac
			f.n++
			return rConsumed
		case f.k == numDot:
			return rReject
		case c == 'e' || c == 'E':
			f.k, f.n = numE, 0
			return rConsumed
		}
		return rPop
	case numE, numESign:
		switch {
		case (c == '+' || c == '-') && f.k == numE:
			f.k = numESign
		case isDigit(c):
			f.k, f.n = numExp, 1
		default:
			return rReject
		}
		return rConsumed
	case numExp:
		if isDigit(c) {
			if f.n >= MaxExpDigits {
				return rReject
			}
			f.n++
			return rConsumed
		}
		return rPop
	}
	return rReject
}
