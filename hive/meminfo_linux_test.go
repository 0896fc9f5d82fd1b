package hive

import (
	"strings"
	"testing"
)

func TestParseMeminfo(t *testing.T) {
	total, avail, err := parseMeminfo(strings.NewReader(
		"MemTotal:       16318480 kB\nMemFree:         1000000 kB\nMemAvailable:    8159240 kB\nBuffers:   1 kB\n"))
	if err != nil || total != 16318480*1024 || avail != 8159240*1024 {
		t.Errorf("got %d, %d, %v", total, avail, err)
	}
	for _, bad := range []string{
		"MemTotal: 1 kB\n",
		"MemTotal: 1 kB\nMemAvailable: x kB\n",
		"MemTotal: 1 MB\nMemAvailable: 1 kB\n",
		"MemTotal: 99999999999999999999 kB\nMemAvailable: 1 kB\n",
		"",
	} {
		if _, _, err := parseMeminfo(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: nil error", bad)
		}
	}
	if total, avail, err := memory(); err != nil || total == 0 || avail > total {
		t.Errorf("memory() = %d, %d, %v", total, avail, err)
	}
}
