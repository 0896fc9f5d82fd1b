package bus

import (
	"testing"
	"time"
)

func TestBackoffDoublesWithinBounds(t *testing.T) {
	lo, hi := 100*time.Millisecond, 5*time.Second
	for n := -1; n < 100; n++ {
		want := hi
		if n <= 0 {
			want = lo
		} else if n < 6 {
			want = lo << n
		}
		for range 50 {
			got := backoff(n, lo, hi)
			if got > want || got < want-want/3 {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", n, got, want-want/3, want)
			}
		}
	}
}
