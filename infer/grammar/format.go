package grammar

import (
	"slices"
	"sync"
)

// dfa is a deterministic automaton over ASCII: the content of a string
// with a format. State 0 is the start.
type dfa struct {
	next   [][128]int16
	accept []bool
}

// Formats are built from small regular expressions over byte classes,
// made into an NFA and determinised once.
type nfa struct {
	eps   [][]int
	edges [][]nedge
}

type nedge struct {
	set [2]uint64 // ASCII bytes
	to  int
}

type frag struct{ in, out int }

// re builds a fragment; a function, so that repetitions build copies.
type re func(*nfa) frag

func (a *nfa) state() int {
	a.eps = append(a.eps, nil)
	a.edges = append(a.edges, nil)
	return len(a.eps) - 1
}

func class(ranges ...byte) re {
	var set [2]uint64
	for i := 0; i+1 < len(ranges); i += 2 {
		for c := ranges[i]; c <= ranges[i+1]; c++ {
			set[c>>6] |= 1 << (c & 63)
		}
	}
	return func(a *nfa) frag {
		in, out := a.state(), a.state()
		a.edges[in] = append(a.edges[in], nedge{set, out})
		return frag{in, out}
	}
}

func lit(s string) re {
	parts := make([]re, len(s))
	for i := range len(s) {
		parts[i] = class(s[i], s[i])
	}
	return seq(parts...)
}

func seq(parts ...re) re {
	return func(a *nfa) frag {
		in := a.state()
		out := in
		for _, p := range parts {
			f := p(a)
			a.eps[out] = append(a.eps[out], f.in)
			out = f.out
		}
		return frag{in, out}
	}
}

func alt(parts ...re) re {
	return func(a *nfa) frag {
		in, out := a.state(), a.state()
		for _, p := range parts {
			f := p(a)
			a.eps[in] = append(a.eps[in], f.in)
			a.eps[f.out] = append(a.eps[f.out], out)
		}
		return frag{in, out}
	}
}

func alts(words ...string) re {
	parts := make([]re, len(words))
	for i, w := range words {
		parts[i] = lit(w)
	}
	return alt(parts...)
}

// rep repeats p min to max times.
func rep(p re, min, max int) re {
	return func(a *nfa) frag {
		in := a.state()
		out := in
		var ends []int
		for i := range max {
			if i >= min {
				ends = append(ends, out)
			}
			f := p(a)
			a.eps[out] = append(a.eps[out], f.in)
			out = f.out
		}
		end := a.state()
		a.eps[out] = append(a.eps[out], end)
		for _, e := range ends {
			a.eps[e] = append(a.eps[e], end)
		}
		return frag{in, end}
	}
}

func opt(p re) re { return rep(p, 0, 1) }

// compileDFA determinises r by the subset construction.
func compileDFA(r re) *dfa {
	var a nfa
	f := r(&a)
	closure := func(set []int) []int {
		seen := map[int]bool{}
		stack := slices.Clone(set)
		for len(stack) > 0 {
			s := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if seen[s] {
				continue
			}
			seen[s] = true
			stack = append(stack, a.eps[s]...)
		}
		out := make([]int, 0, len(seen))
		for s := range seen {
			out = append(out, s)
		}
		slices.Sort(out)
		return out
	}
	key := func(set []int) string {
		b := make([]byte, 0, 4*len(set))
		for _, s := range set {
			b = append(b, byte(s), byte(s>>8), byte(s>>16), byte(s>>24))
		}
		return string(b)
	}
	d := &dfa{}
	index := map[string]int{}
	var sets [][]int
	add := func(set []int) int {
		k := key(set)
		if i, ok := index[k]; ok {
			return i
		}
		index[k] = len(sets)
		sets = append(sets, set)
		var row [128]int16
		for i := range row {
			row[i] = -1
		}
		d.next = append(d.next, row)
		d.accept = append(d.accept, slices.Contains(set, f.out))
		return len(sets) - 1
	}
	add(closure([]int{f.in}))
	for i := 0; i < len(sets); i++ {
		for c := range byte(128) {
			var to []int
			for _, s := range sets[i] {
				for _, e := range a.edges[s] {
					if e.set[c>>6]&(1<<(c&63)) != 0 {
						to = append(to, e.to)
					}
				}
			}
			if len(to) > 0 {
				d.next[i][c] = int16(add(closure(to)))
			}
		}
	}
	return d
}

var formats = sync.OnceValue(func() map[string]*dfa {
	digit := class('0', '9')
	nonzero := class('1', '9')
	day28 := alt(seq(lit("0"), nonzero), seq(lit("1"), digit), seq(lit("2"), class('0', '8')))
	day30 := alt(seq(lit("0"), nonzero), seq(class('1', '2'), digit), lit("30"))
	day31 := alt(seq(lit("0"), nonzero), seq(class('1', '2'), digit), seq(lit("3"), class('0', '1')))
	// February stops at the 28th: every year has it, and the automaton
	// does not track leap years.
	date := seq(rep(digit, 4, 4), lit("-"), alt(
		seq(alts("01", "03", "05", "07", "08", "10", "12"), lit("-"), day31),
		seq(alts("04", "06", "09", "11"), lit("-"), day30),
		seq(lit("02-"), day28)))
	hour := alt(seq(class('0', '1'), digit), seq(lit("2"), class('0', '3')))
	sixty := seq(class('0', '5'), digit)
	time := seq(hour, lit(":"), sixty, lit(":"), sixty, opt(seq(lit("."), rep(digit, 1, 9))),
		alt(lit("Z"), seq(class('+', '+', '-', '-'), hour, lit(":"), sixty)))
	hex := class('0', '9', 'a', 'f', 'A', 'F')
	uuid := seq(rep(hex, 8, 8), lit("-"), rep(hex, 4, 4), lit("-"), rep(hex, 4, 4), lit("-"),
		rep(hex, 4, 4), lit("-"), rep(hex, 12, 12))
	// A conservative e-mail address: dot-separated atoms of letters,
	// digits and _+-, then a domain of two to four alphanumeric labels.
	atom := rep(class('a', 'z', 'A', 'Z', '0', '9', '_', '_', '+', '+', '-', '-'), 1, 16)
	label := rep(class('a', 'z', 'A', 'Z', '0', '9'), 1, 16)
	email := seq(atom, rep(seq(lit("."), atom), 0, 3), lit("@"), label, rep(seq(lit("."), label), 1, 3))
	return map[string]*dfa{
		"date":      compileDFA(date),
		"time":      compileDFA(time),
		"date-time": compileDFA(seq(date, lit("T"), time)),
		"uuid":      compileDFA(uuid),
		"email":     compileDFA(email),
	}
})
