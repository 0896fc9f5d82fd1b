package progress

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// Off a terminal, a bar is a line at each quarter and its last line, however
// many updates come.
func TestPlainLinesAtQuarters(t *testing.T) {
	var out bytes.Buffer
	c := &clock{time.Unix(0, 0)}
	b := newScreen(&out, false, c.now).Bar("model")
	const total = 40 << 20
	for i := int64(0); i <= 10_000; i++ {
		c.t = c.t.Add(time.Millisecond)
		b.Update(i*total/10_000, total)
	}
	b.Done("ready in 10s")
	b.Update(total, total) // after Done: nothing
	want := "model: 25% (10.0 MiB of 40.0 MiB)\nmodel: 50% (20.0 MiB of 40.0 MiB)\n" +
		"model: 75% (30.0 MiB of 40.0 MiB)\nmodel: 100% (40.0 MiB of 40.0 MiB)\nmodel: ready in 10s\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// A size not known ahead gives no quarters, only the last line.
func TestPlainUnknownTotal(t *testing.T) {
	var out bytes.Buffer
	b := newScreen(&out, false, time.Now).Bar("pull")
	for i := range int64(100) {
		b.Update(i<<20, 0)
	}
	b.Done("99.0 MiB")
	if out.String() != "pull: 99.0 MiB\n" {
		t.Errorf("got %q", out.String())
	}
}

// On a terminal a bar is redrawn in place at most every redrawEvery, and
// its last line takes the bar's place.
func TestTerminalRedrawsInPlace(t *testing.T) {
	var out bytes.Buffer
	c := &clock{time.Unix(0, 0)}
	b := newScreen(&out, true, c.now).Bar("model")
	const total = 10 << 20
	for i := int64(0); i <= 1000; i++ {
		c.t = c.t.Add(time.Millisecond) // one second in all
		b.Update(i*total/1000, total)
	}
	draws := strings.Count(out.String(), "\r")
	if draws < 5 || draws > 2+int(time.Second/redrawEvery) {
		t.Errorf("%d redraws in one second, want about %d", draws, time.Second/redrawEvery)
	}
	if strings.Count(out.String(), "\n") != 1 {
		t.Errorf("not one line, ended once the bar was full: %q", out.String())
	}
	last := out.String()[strings.LastIndex(out.String(), "\r"):]
	if want := "\rmodel [========================] 100%  10.0 MiB / 10.0 MiB  10.0 MiB/s\x1b[K\n"; last != want {
		t.Errorf("last draw %q, want %q", last, want)
	}
	b.Update(total, total) // no second full bar
	b.Done("ready")
	if !strings.HasSuffix(out.String(), "MiB/s\x1b[K\nmodel: ready\n") {
		t.Errorf("end %q", out.String()[len(out.String())-30:])
	}
}

// A bar ended before it was full gives its line to the last one.
func TestTerminalDoneTakesTheLine(t *testing.T) {
	var out bytes.Buffer
	b := newScreen(&out, true, time.Now).Bar("pull")
	b.Update(1, 4)
	b.Done("failed: connection reset")
	if !strings.HasSuffix(out.String(), "\x1b[K\r\x1b[Kpull: failed: connection reset\n") || strings.Count(out.String(), "\n") != 1 {
		t.Errorf("got %q", out.String())
	}
}

// Two bars on one terminal each keep a line of their own.
func TestTerminalTwoBars(t *testing.T) {
	var out bytes.Buffer
	c := &clock{time.Unix(0, 0)}
	s := newScreen(&out, true, c.now)
	a, b := s.Bar("a"), s.Bar("b")
	c.t = c.t.Add(time.Second)
	a.Update(1, 4)
	b.Update(2, 4)
	a.Done("ok")
	b.Done("ok")
	want := "\ra [======>                 ]  25%  1 B / 4 B  1 B/s\x1b[K\n" +
		"\rb [============>           ]  50%  2 B / 4 B  2 B/s\x1b[K\na: ok\nb: ok\n"
	if out.String() != want {
		t.Errorf("got  %q\nwant %q", out.String(), want)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 29<<20 + 100<<10: "29.1 MiB", 4 << 30: "4.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) || IsTerminal(&bytes.Buffer{}) {
		t.Error("a file or a buffer taken for a terminal")
	}
}

// A resumed task's rate counts only what came since the bar started.
func TestResumedRate(t *testing.T) {
	var out bytes.Buffer
	c := &clock{time.Unix(0, 0)}
	b := newScreen(&out, true, c.now).Bar("pull")
	b.Resumed(8 << 20)
	c.t = c.t.Add(2 * time.Second)
	b.Update(10<<20, 16<<20)
	if !strings.Contains(out.String(), "10.0 MiB / 16.0 MiB  1.0 MiB/s") {
		t.Errorf("got %q, want 1.0 MiB/s for 2 MiB in 2 s", out.String())
	}
}
