// Package progress draws progress bars for slow work a person waits on:
// model loads and downloads. On a terminal a bar is one line redrawn in
// place; elsewhere (a log file, a pipe) it is a plain line at each quarter,
// never a line per update.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// redrawEvery bounds how often a terminal line is redrawn.
const redrawEvery = 100 * time.Millisecond

// barWidth is the bar's width in characters.
const barWidth = 24

// IsTerminal reports whether w is a character device, such as a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Screen is the writer bars draw on, which several bars may share: on a
// terminal the line of one bar is ended before another draws.
type Screen struct {
	mu   sync.Mutex
	w    io.Writer
	tty  bool
	now  func() time.Time
	open *Bar // the bar whose line is on the terminal, not yet ended
}

// NewScreen draws on w, as a terminal when w is one.
func NewScreen(w io.Writer) *Screen { return newScreen(w, IsTerminal(w), time.Now) }

func newScreen(w io.Writer, tty bool, now func() time.Time) *Screen {
	return &Screen{w: w, tty: tty, now: now}
}

// Bar is one task's progress. Its methods may be called from any
// goroutine.
type Bar struct {
	s        *Screen
	label    string
	start    time.Time
	drawn    time.Time // when the terminal line was last drawn
	base     int64     // done before the bar started (Resumed)
	done     int64
	total    int64 // 0: unknown
	quarters int   // quarters told on plain lines
	full     bool  // drawn whole, its line ended (terminal)
	ended    bool
}

// Bar starts a bar labelled label.
func (s *Screen) Bar(label string) *Bar {
	return &Bar{s: s, label: label, start: s.now()}
}

// Resumed says that n of the work was done before the bar started (a
// resumed download): the rate leaves it out.
func (b *Bar) Resumed(n int64) {
	b.s.mu.Lock()
	b.base = n
	b.s.mu.Unlock()
}

// Update sets how much of total is done; total 0 is unknown (a bar then
// shows the bytes and rate alone).
func (b *Bar) Update(done, total int64) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.ended {
		return
	}
	b.done, b.total = done, total
	now := s.now()
	if !s.tty {
		if total <= 0 {
			return
		}
		q := int(min(done, total) * 4 / total)
		if q > b.quarters {
			b.quarters = q
			fmt.Fprintf(s.w, "%s: %d%% (%s of %s)\n", b.label, q*25, Bytes(done), Bytes(total))
		}
		return
	}
	full := total > 0 && done >= total
	if b.full || s.open == b && now.Sub(b.drawn) < redrawEvery && !full {
		return
	}
	if s.open != nil && s.open != b {
		fmt.Fprintln(s.w) // leave the other bar's line as it stands
	}
	s.open, b.drawn = b, now
	fmt.Fprint(s.w, "\r"+b.line(now)+"\x1b[K")
	if full {
		// Whatever is logged before Done (checks after a download, the
		// model's log line) goes below a finished bar, not after it.
		fmt.Fprintln(s.w)
		s.open, b.full = nil, true
	}
}

// line is the bar's terminal line.
func (b *Bar) line(now time.Time) string {
	rate := ""
	if secs := now.Sub(b.start).Seconds(); secs > 0 {
		rate = "  " + Bytes(int64(float64(b.done-b.base)/secs)) + "/s"
	}
	if b.total <= 0 {
		return fmt.Sprintf("%s  %s%s", b.label, Bytes(b.done), rate)
	}
	frac := float64(min(b.done, b.total)) / float64(b.total)
	full := int(frac * barWidth)
	bar := strings.Repeat("=", full)
	if full < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-full-1)
	}
	return fmt.Sprintf("%s [%s] %3d%%  %s / %s%s", b.label, bar, int(frac*100), Bytes(b.done), Bytes(b.total), rate)
}

// Done ends the bar with a last line, "label: note"; later updates are
// ignored.
func (b *Bar) Done(note string) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if b.ended {
		return
	}
	b.ended = true
	switch {
	case s.open == b:
		fmt.Fprint(s.w, "\r\x1b[K") // the summary takes the bar's line
		s.open = nil
	case s.open != nil:
		fmt.Fprintln(s.w)
		s.open = nil
	}
	fmt.Fprintf(s.w, "%s: %s\n", b.label, note)
}

// Elapsed is how long ago the bar started.
func (b *Bar) Elapsed() time.Duration { return b.s.now().Sub(b.start) }

// Bytes formats n bytes for a person: 512 B, 1.5 KiB, 29.1 MiB, 4.0 GiB.
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, exp := float64(n)/unit, 0
	for v >= unit && exp < 4 {
		v /= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[exp])
}
