package sample

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

type push struct {
	in      string
	emit    string
	stopped bool
}

func runPushes(t *testing.T, stops []string, steps []push, flush string) {
	t.Helper()
	m := NewStopMatcher(stops)
	for i, st := range steps {
		emit, stopped := m.Push(st.in)
		if emit != st.emit || stopped != st.stopped {
			t.Fatalf("push %d (%q): got (%q, %v), want (%q, %v)", i, st.in, emit, stopped, st.emit, st.stopped)
		}
	}
	if got := m.Flush(); got != flush {
		t.Fatalf("Flush() = %q, want %q", got, flush)
	}
}

func TestStopMatcherSteps(t *testing.T) {
	cases := []struct {
		name  string
		stops []string
		steps []push
		flush string
	}{
		{
			name:  "no stops",
			steps: []push{{"Hel", "Hel", false}, {"lo <", "lo <", false}},
		},
		{
			name:  "split over many pushes",
			stops: []string{"</s>"},
			steps: []push{
				{"Hello <", "Hello ", false},
				{"/", "", false},
				{"s", "", false},
				{"> more", "", true},
				{"after", "", true},
			},
		},
		{
			name:  "false alarm is released",
			stops: []string{"</s>"},
			steps: []push{{"a </", "a ", false}, {"b", "</b", false}, {" <", " ", false}},
			flush: "<",
		},
		{
			name:  "overlapping prefix",
			stops: []string{"abcabd"},
			steps: []push{
				{"abcab", "", false},
				// "abcabc" cannot start the stop at 0, but "abc" still can.
				{"c", "abc", false},
				{"abd", "", true},
			},
		},
		{
			name:  "stop in a single push",
			stops: []string{"\n\nUser:"},
			steps: []push{{"Sure.\n\nUser: hi", "Sure.", true}},
		},
		{
			name:  "held text flushed at the end",
			stops: []string{"STOP"},
			steps: []push{{"abcST", "abc", false}},
			flush: "ST",
		},
		{
			name:  "the stop that completes first wins",
			stops: []string{"abcd", "bc"},
			steps: []push{{"xabcd", "xa", true}},
		},
		{
			name:  "on a tie the longer stop wins",
			stops: []string{"cd", "abcd"},
			steps: []push{{"xab", "x", false}, {"cd", "", true}},
		},
		{
			name:  "empty stop strings are ignored",
			stops: []string{"", "END"},
			steps: []push{{"text", "text", false}, {"END", "", true}},
		},
		{
			name:  "multibyte stop split inside characters",
			stops: []string{"終わり"},
			steps: []push{
				{"物語の\xe7\xb5", "物語の", false},
				{"\x82\xe3\x82", "", false},
				{"\x8fり", "", true},
			},
		},
		{
			name: "partial UTF-8 is held without stops",
			steps: []push{
				{"a\xe6\x97", "a", false},
				{"\xa5本", "日本", false},
				{"\xf0\x9f", "", false},
			},
			flush: "\xf0\x9f",
		},
		{
			name:  "invalid UTF-8 is not held",
			steps: []push{{"a\xff", "a\xff", false}, {"\x80", "\x80", false}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			runPushes(t, tc.stops, tc.steps, tc.flush)
		})
	}
}

// expected is what the whole text gives: everything before the stop string
// that ends first (the longer one on a tie), or all of it.
func expected(text string, stops []string) (string, bool) {
	for end := 1; end <= len(text); end++ {
		best := -1
		for _, s := range stops {
			if s != "" && strings.HasSuffix(text[:end], s) && (best < 0 || end-len(s) < best) {
				best = end - len(s)
			}
		}
		if best >= 0 {
			return text[:best], true
		}
	}
	return text, false
}

// TestStopMatcherAnySplit feeds texts in random pieces, down to single
// bytes, and checks the output never depends on the split.
func TestStopMatcherAnySplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		text  string
		stops []string
	}{
		{"xxabcabcabdyy", []string{"abcabd"}},
		{"aaaaab", []string{"aab"}},
		{"one two three", []string{"two", "o t"}},
		{"no stop here", []string{"stop!", "zzz"}},
		{"no stops configured", nil},
		{"日本語のテキスト、終わり。続き", []string{"終わり", "わり。"}},
		{"emoji 😀😁 then <|im_end|> rest", []string{"<|im_end|>", "<|endoftext|>"}},
		{"<|im_end", []string{"<|im_end|>"}},
		{"ababababa", []string{"abab", "bab"}},
	}
	for _, tc := range cases {
		want, wantStopped := expected(tc.text, tc.stops)
		for trial := range 200 {
			m := NewStopMatcher(tc.stops)
			var got strings.Builder
			stopped := false
			rest := tc.text
			for rest != "" && !stopped {
				n := 1 + rng.IntN(min(len(rest), 1+trial%8))
				var emit string
				emit, stopped = m.Push(rest[:n])
				rest = rest[n:]
				if utf8.ValidString(tc.text) && !utf8.ValidString(emit) {
					t.Fatalf("%q: emitted invalid UTF-8 %q", tc.text, emit)
				}
				got.WriteString(emit)
			}
			got.WriteString(m.Flush())
			if got.String() != want || stopped != wantStopped {
				t.Fatalf("%q stops %q trial %d: got (%q, %v), want (%q, %v)",
					tc.text, tc.stops, trial, got.String(), stopped, want, wantStopped)
			}
		}
	}
}
