package infer

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"
)

// Load tells its progress from nothing read to the whole file, and the
// model it loads generates as one loaded without a callback.
func TestLoadProgress(t *testing.T) {
	st, err := os.Stat(storiesPath)
	if err != nil {
		t.Fatal(err)
	}
	var seen []LoadProgress
	withProgress := loadStoriesWith(t, Options{Threads: 2, Progress: func(p LoadProgress) { seen = append(seen, p) }})
	if len(seen) < 2 || seen[0] != (LoadProgress{0, st.Size()}) || seen[len(seen)-1] != (LoadProgress{st.Size(), st.Size()}) {
		t.Fatalf("reports %v, want from {0 %d} to {%[2]d %[2]d}", seen, st.Size())
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Done <= seen[i-1].Done || seen[i].Total != st.Size() {
			t.Errorf("report %d %v after %v: not forward", i, seen[i], seen[i-1])
		}
	}
	generate := func(m *Model) []int32 {
		s, err := m.NewSession(64)
		if err != nil {
			t.Fatal(err)
		}
		res, err := s.Generate(context.Background(), Request{Prompt: "Once upon a time", MaxTokens: 16},
			func(Token) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return res.GeneratedIDs
	}
	if a, b := generate(withProgress), generate(loadStories(t)); !slices.Equal(a, b) {
		t.Errorf("with progress %v, without %v", a, b)
	}
}

// A load of thousands of chunks is told at most once a percent and once
// progressInterval, always with its first and last report.
func TestLoadProgressRate(t *testing.T) {
	const total, steps = 10_000_000, 10_000
	for _, tc := range []struct {
		name       string
		tick       time.Duration // between two chunks
		maxReports int
	}{
		// Fast: the clock limits it, 1 s in all.
		{"fast", 100 * time.Microsecond, 2 + int(time.Second/progressInterval)},
		// Slow: the percent limits it.
		{"slow", time.Second, 2 + 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := time.Unix(0, 0)
			var seen []LoadProgress
			th := &throttle{fn: func(p LoadProgress) { seen = append(seen, p) }, now: func() time.Time { return clock }}
			th.report(0, total)
			for i := 1; i <= steps; i++ {
				clock = clock.Add(tc.tick)
				th.report(int64(i)*total/steps, total)
			}
			if len(seen) > tc.maxReports || len(seen) < 10 {
				t.Errorf("%d reports, want 10 to %d", len(seen), tc.maxReports)
			}
			if seen[0].Done != 0 || seen[len(seen)-1].Done != total {
				t.Errorf("first %v, last %v: want from 0 to the whole", seen[0], seen[len(seen)-1])
			}
			for i := 1; i < len(seen)-1; i++ {
				if gap := seen[i].Done - seen[i-1].Done; gap*100 < total {
					t.Errorf("report %d only %d bytes after the one before", i, gap)
				}
			}
		})
	}
}
