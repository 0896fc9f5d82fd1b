package sample

import (
	"strings"
	"unicode/utf8"
)

// StopMatcher finds stop strings in streamed text whose pieces (decoded
// tokens) may split a stop string, or a UTF-8 character, anywhere.
//
// It holds back the shortest tail of the text that could still grow into a
// stop string or complete a partial UTF-8 character, and emits the rest.
// When several stop strings occur, the one that completes first wins (the
// longer one on a tie), so the result does not depend on how the text was
// split into pieces. A StopMatcher is not safe for concurrent use.
type StopMatcher struct {
	stops   []string
	maxLen  int
	held    string
	stopped bool
}

// NewStopMatcher returns a matcher for stops. Empty strings are ignored: they
// would match before any text.
func NewStopMatcher(stops []string) *StopMatcher {
	m := &StopMatcher{}
	for _, s := range stops {
		if s == "" {
			continue
		}
		m.stops = append(m.stops, s)
		m.maxLen = max(m.maxLen, len(s))
	}
	return m
}

// Push appends newly decoded text and returns the text that is now safe to
// emit. stopped is true once a stop string has completed: emit then ends
// right before it, and the stop string and anything after it are dropped.
// After that, Push returns ("", true).
func (m *StopMatcher) Push(text string) (emit string, stopped bool) {
	if m.stopped {
		return "", true
	}
	buf := m.held + text
	if at, ok := m.firstStop(buf); ok {
		m.stopped = true
		m.held = ""
		return buf[:at], true
	}
	keep := max(m.stopPrefixLen(buf), partialRuneLen(buf))
	m.held = buf[len(buf)-keep:]
	return buf[:len(buf)-keep], false
}

// Flush returns the held-back text at the end of generation; it is "" after
// a stop string matched.
func (m *StopMatcher) Flush() string {
	out := m.held
	m.held = ""
	return out
}

// firstStop returns where the stop string that ends first in buf starts.
func (m *StopMatcher) firstStop(buf string) (int, bool) {
	start, end := -1, -1
	for _, s := range m.stops {
		i := strings.Index(buf, s)
		if i < 0 {
			continue
		}
		e := i + len(s)
		if start < 0 || e < end || (e == end && i < start) {
			start, end = i, e
		}
	}
	return start, start >= 0
}

// stopPrefixLen returns the length of the longest tail of buf that is a
// proper prefix of some stop string; it looks at most maxLen-1 bytes back.
func (m *StopMatcher) stopPrefixLen(buf string) int {
	for k := min(len(buf), m.maxLen-1); k > 0; k-- {
		tail := buf[len(buf)-k:]
		for _, s := range m.stops {
			if len(s) > k && strings.HasPrefix(s, tail) {
				return k
			}
		}
	}
	return 0
}

// partialRuneLen returns the length of an incomplete UTF-8 sequence at the
// end of buf, one that more bytes could still complete.
func partialRuneLen(buf string) int {
	for k := 1; k < utf8.UTFMax && k <= len(buf); k++ {
		b := buf[len(buf)-k]
		if utf8.RuneStart(b) {
			if utf8.FullRuneInString(buf[len(buf)-k:]) {
				return 0
			}
			return k
		}
	}
	return 0
}
